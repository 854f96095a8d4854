"""Slow clients: 50 sockets that send a header line a second cannot hold the API.

Against gunicorn's threaded workers (the configuration before this one) they held every thread
and probes went unanswered; gevent workers give each a greenlet and cut a request whose header
is not in after `keepalive` (2 s). In production nginx (deploy/nginx.conf) stands in front:
the slow sockets wait there and never reach the API, and event streams pass it unbuffered.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from core import migrate
from core.db import Database
from core.settings import Settings
from service.stack import free_port
from tests.conftest import KEYS, add_keys
from tests.live import Gunicorn
from tests.streams import call, open_stream, percentile, read_until
from tests.support import ROOT, SEED_SPEC, LoggedProcess

pytestmark = pytest.mark.integration
SLOW = 50
STALL_MS = 1000  # a stalled server answers in seconds or not at all; a busy machine in ms
AUTH = {"Authorization": f"Bearer {KEYS['alice']}"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A migrated SQLite database with keys and the embedded broker (nothing trains here)."""
    tmp = tmp_path_factory.mktemp("slow")
    url = f"sqlite:///{tmp / 'api.db'}"
    migrate.upgrade(url)
    database = Database(url)
    add_keys(database)
    database.dispose()
    env = {"DATABASE_URL": url, "BROKER_URL": f"filesystem://{tmp / 'broker'}"}
    return Settings.from_env({**env, "VAR_DIR": str(tmp)})


def slow_attack(port: int, seconds: float, every: float = 1.0) -> dict[str, Any]:
    """SLOW sockets sending a header line every `every` s while /healthz is probed."""
    attackers = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(SLOW)]
    for sock in attackers:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    timings: list[float] = []
    failed = 0
    started = next_line = time.monotonic()
    while time.monotonic() - started < seconds:
        if time.monotonic() >= next_line:
            for n, sock in enumerate(attackers):
                with suppress(OSError):  # the server may have hung up on it
                    sock.sendall(f"X-Slow-{n}: {int(time.monotonic())}\r\n".encode())
            next_line += every
        at = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            assert conn.getresponse().status == 200
            timings.append(time.perf_counter() - at)
        except OSError:
            failed += 1
        finally:
            conn.close()
        time.sleep(0.05)
    cut = 0
    for sock in attackers:
        sock.setblocking(False)
        try:
            cut += sock.recv(1) == b""  # closed from the other side
        except ConnectionResetError:
            cut += 1  # closed, and reset by the lines sent after
        except BlockingIOError:
            pass  # still open
        sock.close()
    return {
        "answered": len(timings),
        "failed": failed,
        "p99_ms": percentile(timings, 99) if timings else None,
        "cut": cut,
    }


@pytest.fixture(scope="module")
def gevent_server(settings: Settings) -> Iterator[Gunicorn]:
    # A stream left open by a test is noticed gone within a second.
    server = Gunicorn(
        settings, settings.var_dir / "gevent.log", workers=2, EVENTS_HEARTBEAT_SECONDS="1"
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_slow_clients_hold_threads_but_not_greenlets(
    settings: Settings, gevent_server: Gunicorn, capsys: pytest.CaptureFixture[str]
) -> None:
    threaded = Gunicorn(
        settings,
        settings.var_dir / "gthread.log",
        workers=2,
        GUNICORN_CMD_ARGS="--worker-class gthread --threads 8",
    )
    try:
        threaded.wait_ready()
        before = slow_attack(threaded.port, seconds=4)
    finally:
        threaded.stop()
    after = slow_attack(gevent_server.port, seconds=4)
    with capsys.disabled():
        print(f"\n{SLOW} slow-header clients: gthread 2x8 (before) {before}; gevent (now) {after}")
    assert before["failed"] >= 1, "the threaded server was expected to stall"
    assert after["failed"] == 0 and after["answered"] >= 20
    assert after["p99_ms"] is not None and after["p99_ms"] <= STALL_MS
    assert after["cut"] == SLOW, "gevent workers hang up on a header still incomplete after 2 s"


def answers(port: int) -> bool:
    """True once /healthz answers 200 on the port."""
    try:
        return call(port, "GET", "/healthz", "")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def nginx(gevent_server: Gunicorn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """deploy/nginx.conf in front of the server: its port. Skipped where nginx is missing."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    config = (ROOT / "deploy" / "nginx.conf").read_text()
    config = config.replace("listen 8000;", f"listen 127.0.0.1:{port};")
    config = config.replace("http://api:8000", f"http://127.0.0.1:{gevent_server.port}")
    config = config.replace("/var/log/nginx/access.log", str(tmp / "access.log"))
    (tmp / "nginx.conf").write_text(config)
    argv = [binary, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]
    globals_ = f"daemon off; pid {tmp / 'nginx.pid'}; error_log {tmp / 'error.log'};"
    check = subprocess.run([*argv, "-t", "-g", globals_], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proxy = LoggedProcess([*argv, "-g", globals_], {}, tmp / "nginx.out")
    try:
        proxy.wait_until(lambda: answers(port), timeout=10)
        yield port
    finally:
        proxy.stop()


def test_behind_nginx_slow_clients_wait_there_and_streams_pass_unbuffered(nginx: int) -> None:
    through = slow_attack(nginx, seconds=3)
    assert through["failed"] == 0 and through["p99_ms"] is not None
    assert through["p99_ms"] <= STALL_MS
    status, _, job = call(nginx, "POST", "/v1/jobs", KEYS["alice"], SEED_SPEC)
    assert status == 202  # stays queued: nothing trains here
    conn = http.client.HTTPConnection("127.0.0.1", nginx, timeout=5)
    started = time.monotonic()
    conn.request("GET", f"/v1/jobs/{job['id']}/events", headers=AUTH)
    answer = conn.getresponse()
    assert answer.status == 200 and answer.getheader("Content-Type") == "text/event-stream"
    # A buffering proxy would hold the status event until the stream ended (minutes from now).
    assert answer.readline() == b"event: status\n"
    assert time.monotonic() - started < 2
    conn.close()


def stream_status(port: int, job_id: str) -> int:
    """Open one of alice's streams on the job, read the status of the answer, hang up."""
    watcher = open_stream(port, "alice", job_id)
    read_until([watcher], lambda: watcher.status_code != 0, timeout=10)
    watcher.sock.close()
    return watcher.status_code


def test_a_client_gone_silent_frees_its_slot_at_the_next_keepalive(settings: Settings) -> None:
    server = Gunicorn(
        settings,
        settings.var_dir / "one-slot.log",
        workers=1,
        EVENTS_MAX_PER_TENANT="1",
        EVENTS_HEARTBEAT_SECONDS="0.5",
    )
    try:
        server.wait_ready()
        status, _, job = call(server.port, "POST", "/v1/jobs", KEYS["alice"], SEED_SPEC)
        assert status == 202  # stays queued: its stream would stay open until EVENTS_MAX_SECONDS
        path = f"/v1/jobs/{job['id']}/events"
        held = open_stream(server.port, "alice", job["id"])
        assert read_until([held], lambda: bool(held.statuses), timeout=10)
        assert call(server.port, "GET", path, KEYS["alice"])[0] == 429
        held.sock.close()  # gone without a word: the next keepalive fails, the slot is freed
        deadline = time.monotonic() + 10
        while (status := stream_status(server.port, job["id"])) != 200:
            assert status == 429 and time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.2)
    finally:
        server.stop()
