"""Many open event streams against the shipped server, and probes that must stay fast meanwhile.

    .venv/bin/python -m tests.streams --streams 2000      # `make streams`

Real processes: gunicorn with service/gunicorn_conf.py (gevent, 2 workers), a Celery worker,
the local Redis and PostgreSQL when they answer. The streams are split between two tenants,
each watching its own queued job; the worker starts once every stream is open, so every stream
must see its job start, each epoch once and in order, and the final status. A separate process
probes /healthz, /readyz and a third tenant's job list the whole time; the figures are their
latencies. `tests/integration/test_streams.py` runs it at 500 streams in `make test`.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import multiprocessing
import resource
import selectors
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.db import Database
from core.settings import Settings
from service.auth import ensure_api_key
from tests.conftest import KEYS
from tests.integration.harness import Harness
from tests.live import Gunicorn
from tests.support import SEED_SPEC, child_pids

TENANTS = ("alice", "bob")
CAROL_KEY = "key-carol-0123456789"
PROBES = {
    "/healthz": {},
    "/readyz": {},
    "/v1/jobs": {"Authorization": f"Bearer {CAROL_KEY}"},
}


@dataclass
class Watcher:
    """One open stream, read without blocking: its raw bytes parsed into events as they come."""

    sock: socket.socket
    tenant: str
    head: bytes | None = None
    buffer: bytes = b""
    statuses: list[str] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    comments: int = 0
    ended: bool = False

    @property
    def status_code(self) -> int:
        """The HTTP status of the answer (0 before its head has arrived)."""
        return int(self.head.split(b" ", 2)[1]) if self.head else 0

    def take(self, data: bytes) -> None:
        """Parse what arrived: the head once, then complete events."""
        self.buffer += data
        if self.head is None:
            if b"\r\n\r\n" not in self.buffer:
                return
            self.head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            self.event(block.decode())

    def event(self, block: str) -> None:
        """Record one event: a status, an epoch's id, or a comment."""
        if block.startswith(":"):
            self.comments += 1
            return
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        if fields.get("event") == "status":
            self.statuses.append(json.loads(fields["data"])["status"])
        elif fields.get("event") == "epoch":
            self.epochs.append(int(fields["id"]))


def open_stream(port: int, tenant: str, job_id: str) -> Watcher:
    """Connect and ask for the job's events over HTTP/1.0 (the body ends when the stream does)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = (
        f"GET /v1/jobs/{job_id}/events HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEYS[tenant]}\r\n\r\n"
    )
    sock.sendall(request.encode())
    sock.setblocking(False)
    return Watcher(sock, tenant)


def read_until(watchers: list[Watcher], done: Any, timeout: float) -> bool:
    """Read every open stream until `done()` holds (True) or `timeout` passes (False)."""
    selector = selectors.DefaultSelector()
    for watcher in watchers:
        if not watcher.ended:
            selector.register(watcher.sock, selectors.EVENT_READ, watcher)
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if time.monotonic() > deadline:
                return False
            for key, _ in selector.select(timeout=0.2):
                watcher = key.data
                data = watcher.sock.recv(65536)
                if data:
                    watcher.take(data)
                else:
                    watcher.ended = True
                    selector.unregister(watcher.sock)
                    watcher.sock.close()
        return True
    finally:
        selector.close()


def probe(port: int, stop: Any, results: Any) -> None:
    """In its own process: GET each probe route in turn until told to stop; send the timings.

    Each timing is (path, when it started on the monotonic clock, seconds it took).
    """
    timings: list[tuple[str, float, float]] = []
    failures: list[str] = []
    first = True
    while not stop.is_set():
        for path, headers in PROBES.items():
            at, started = time.monotonic(), time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path, headers=headers)
                answer = conn.getresponse()
                answer.read()
                if answer.status != 200:
                    failures.append(f"{path}: {answer.status}")
            except OSError as exc:
                failures.append(f"{path}: {exc}")
            finally:
                conn.close()
            timings.append((path, at, time.perf_counter() - started))
        if first:
            results.send("running")
            first = False
        time.sleep(0.005)
    results.send((timings, failures))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of the values, in milliseconds."""
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)


def latencies(
    timings: list[tuple[str, float, float]], since: float, until: float
) -> dict[str, dict[str, float]]:
    """Per probe route, the count, median, 99th percentile and worst of those started between."""
    summary = {}
    for path in PROBES:
        values = [took for route, at, took in timings if route == path and since <= at < until]
        if values:
            summary[path] = {
                "n": len(values),
                "p50_ms": percentile(values, 50),
                "p99_ms": percentile(values, 99),
                "max_ms": percentile(values, 100),
            }
    return summary


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / 100  # clock ticks (USER_HZ)


def raise_open_files(needed: int) -> None:
    """Lift this process's (and its children's) open-file limit to `needed` if it is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def call(port: int, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any, Any]:
    """One request with the key: (status, headers, JSON body, or the text of any other)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    answer = conn.getresponse()
    raw = answer.read().decode()
    conn.close()
    is_json = answer.getheader("Content-Type") == "application/json"
    return answer.status, answer.headers, json.loads(raw) if is_json else raw


def submit(port: int, key: str, name: str, epochs: int) -> str:
    """POST a seed job with the key; its id."""
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(name=name, epochs=epochs)
    status, _, job = call(port, "POST", "/v1/jobs", key, spec)
    assert status == 202, job
    job_id: str = job["id"]
    return job_id


def one_more(port: int, tenant: str, job_id: str) -> tuple[int, str | None, str]:
    """Open one more stream of the tenant's: (status, Retry-After, error code or body start)."""
    status, headers, body = call(port, "GET", f"/v1/jobs/{job_id}/events", KEYS[tenant])
    code = body["error"]["code"] if isinstance(body, dict) else body[:40]
    return status, headers.get("Retry-After"), code


def busy_worker(harness: Harness, port: int) -> str:
    """A started worker kept busy by a long job of carol's, so later jobs wait in the queue."""
    harness.start_worker()
    blocker = submit(port, CAROL_KEY, "blocker", epochs=10_000)
    deadline = time.monotonic() + 60
    while call(port, "GET", f"/v1/jobs/{blocker}", CAROL_KEY)[2]["status"] != "running":
        assert time.monotonic() < deadline, "the blocking job never started"
        time.sleep(0.1)
    return blocker


def run(streams: int, tmp: Path, cleanup: ExitStack, epochs: int = 300) -> dict[str, Any]:
    """Open `streams` streams, train their two jobs, and measure; the figures (or an error)."""
    raise_open_files(streams + 1024)
    per_tenant = streams // len(TENANTS)
    env = {
        "EVENTS_MAX_PER_TENANT": str(per_tenant),
        "OMP_NUM_THREADS": "1",  # the worker's BLAS: one core for it, one for the rest
        "OPENBLAS_NUM_THREADS": "1",
    }
    harness = Harness.start(tmp, cleanup, **env)
    database = Database(harness.database_url)
    with database.begin() as session:
        ensure_api_key(session, "carol", CAROL_KEY)
    database.dispose()
    settings = Settings.from_env(harness.env)
    server = Gunicorn(
        settings,
        tmp / "gunicorn.log",
        workers=2,
        LOG_LEVEL="WARNING",
        EVENTS_MAX_PER_TENANT=env["EVENTS_MAX_PER_TENANT"],
        # Room for every stream in either process (the kernel need not share them evenly).
        WEB_CONNECTIONS=str(max(Settings().web_connections, streams + 100)),
    )
    cleanup.callback(server.stop)
    server.wait_ready()
    port = server.port
    # The worker is started (and warm) first; the streams' jobs wait behind carol's long one.
    blocker = busy_worker(harness, port)
    jobs = {tenant: submit(port, KEYS[tenant], f"{tenant}-streams", epochs) for tenant in TENANTS}

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    receiver, sender = context.Pipe(duplex=False)
    prober = context.Process(target=probe, args=(port, stop, sender), daemon=True)
    prober.start()
    cleanup.callback(prober.kill)
    if not receiver.poll(60):  # the first round of probes is done: it is running
        raise RuntimeError("the probing process did not start")
    receiver.recv()

    started = time.monotonic()
    watchers = [open_stream(port, t, jobs[t]) for t in TENANTS for _ in range(per_tenant)]
    for watcher in watchers:
        cleanup.callback(watcher.sock.close)
    opened = read_until(watchers, lambda: all(w.statuses for w in watchers), timeout=120)
    opened_at = time.monotonic()
    refused = [w.status_code for w in watchers if w.status_code != 200]
    if not opened or refused:
        raise AssertionError(f"streams not all open: {len(refused)} refused ({refused[:5]})")
    over_cap = one_more(port, "alice", jobs["alice"])
    pids = child_pids(server.proc.pid)
    cpu_before = cpu_seconds(pids)

    trained_from = time.monotonic()
    assert call(port, "POST", f"/v1/jobs/{blocker}/cancel", CAROL_KEY)[0] == 202
    finished = read_until(watchers, lambda: all(w.ended for w in watchers), timeout=300)
    finished_at = time.monotonic()
    api_cpu = cpu_seconds(pids) - cpu_before
    after_all = one_more(port, "alice", jobs["alice"])
    stop.set()
    timings, failures = receiver.recv()
    prober.join(10)

    complete = [
        w
        for w in watchers
        if w.statuses[0] == "queued"
        and w.statuses[-1] == "succeeded"
        and w.epochs == list(range(1, epochs + 1))
    ]
    return {
        "streams": len(watchers),
        "tenants": len(TENANTS),
        "epochs": epochs,
        "open_s": round(opened_at - started, 2),
        "train_s": round(finished_at - trained_from, 2),
        "finished": finished,
        "complete": len(complete),
        "events": sum(len(w.statuses) + len(w.epochs) for w in watchers),
        "over_cap": over_cap,
        "after_all": after_all[0],
        "api_cpu_s": round(api_cpu, 2),
        "probe_failures": failures[:5],
        # While the streams were being opened (500 requests at once), and while they were open.
        "opening": latencies(timings, started, opened_at),
        "probes": latencies(timings, opened_at, finished_at),
        "slowest": sorted(
            ((round(1000 * took), path, round(at - opened_at, 2)) for path, at, took in timings),
            reverse=True,
        )[:8],
    }


def figures_line(figures: dict[str, Any]) -> str:
    """The run in one line."""
    probes, opening = (
        ", ".join(
            f"{path} n={p['n']} p50 {p['p50_ms']} p99 {p['p99_ms']} max {p['max_ms']} ms"
            for path, p in figures[phase].items()
        )
        for phase in ("probes", "opening")
    )
    return (
        f"streams: {figures['streams']} open over {figures['tenants']} tenants in "
        f"{figures['open_s']} s; {figures['complete']}/{figures['streams']} saw every one of "
        f"{figures['epochs']} epochs and the final status ({figures['events']:,} events, "
        f"training {figures['train_s']} s, API CPU {figures['api_cpu_s']} s); one stream over "
        f"the cap: {figures['over_cap'][0]} Retry-After {figures['over_cap'][1]}; probes while "
        f"open: {probes}; while opening: {opening}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as cleanup:
        figures = run(args.streams, Path(tmp), cleanup, epochs=args.epochs)
    print(figures_line(figures), flush=True)
    slow = [path for path, p in figures["probes"].items() if p["p99_ms"] > 100]
    return 0 if figures["complete"] == figures["streams"] and not slow else 1


if __name__ == "__main__":
    sys.exit(main())
