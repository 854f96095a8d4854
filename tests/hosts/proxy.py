"""A fault-injecting TCP proxy: each chunk delayed by 100 ms +/- 50 (order kept), and 2 % of
connections cut mid-stream (both ends reset). The kernel's netem is not available everywhere;
this stands on the path between the worker hosts and the data host instead.

    python -m tests.hosts.proxy LISTEN_HOST:PORT=TARGET_HOST:PORT [...] [--latency-ms 100]
        [--jitter-ms 50] [--cut 0.02] [--seed N]

Prints one line per cut connection and, on SIGTERM, a line of totals.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from dataclasses import dataclass


@dataclass
class Faults:
    latency: float = 0.100
    jitter: float = 0.050
    cut: float = 0.02
    connections: int = 0
    cuts: int = 0


async def pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    faults: Faults,
    rng: random.Random,
) -> None:
    """Copy one direction, each chunk delivered `latency +/- jitter` after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    last = 0.0
    try:
        while True:
            chunk = await reader.read(65536)
            delay = faults.latency + rng.uniform(-faults.jitter, faults.jitter)
            last = max(last, time.monotonic() + delay)  # later chunks never overtake
            await queue.put((last, chunk))
            if not chunk:
                break
        await sender
    finally:
        sender.cancel()


async def handle(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    faults: Faults,
    rng: random.Random,
) -> None:
    faults.connections += 1
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.transport.abort()
        return
    pumps = asyncio.gather(
        pump(client_reader, upstream_writer, faults, rng),
        pump(upstream_reader, client_writer, faults, rng),
    )
    cut_after = rng.uniform(0.2, 10.0) if rng.random() < faults.cut else None
    try:
        if cut_after is None:
            await pumps
        else:
            await asyncio.wait_for(asyncio.shield(pumps), cut_after)
    except TimeoutError:
        faults.cuts += 1
        print(f"cut {target[0]}:{target[1]} after {cut_after:.1f}s", flush=True)
        pumps.cancel()
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (client_writer, upstream_writer):
            w.transport.abort()


async def serve(
    routes: list[tuple[tuple[str, int], tuple[str, int]]], faults: Faults, seed: int
) -> None:
    rng = random.Random(seed)
    servers = []
    for (host, port), target in routes:

        async def serve_one(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, t: tuple[str, int] = target
        ) -> None:
            await handle(r, w, t, faults, rng)

        servers.append(await asyncio.start_server(serve_one, host, port, reuse_address=True))
    print("proxy ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    print(f"totals connections={faults.connections} cuts={faults.cuts}", flush=True)


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routes", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--jitter-ms", type=float, default=50)
    parser.add_argument("--cut", type=float, default=0.02, help="share of connections cut")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    routes = [(address(a), address(b)) for a, _, b in (r.partition("=") for r in args.routes)]
    faults = Faults(args.latency_ms / 1000, args.jitter_ms / 1000, args.cut)
    asyncio.run(serve(routes, faults, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
