"""Helpers shared by the test modules: real services when they answer, and a worker process."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from flask.testing import FlaskClient

from core import migrate
from core.db import Database, normalize_url
from service.auth import ensure_api_key
from service.stack import redis_answers, redis_command, worker_command

ROOT = Path(__file__).resolve().parent.parent
SEED_SPEC: dict[str, Any] = json.loads((ROOT / "examples" / "seed_job.json").read_text())


def redis_url() -> str | None:
    """REDIS_URL if set, else the local Redis, if it answers."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        return url
    if os.environ.get("REDIS_URL") or os.environ.get("CI"):
        raise RuntimeError(f"Redis at {url} does not answer")
    return None


def postgres_admin_url() -> str | None:
    """TEST_DATABASE_URL if set, else the local PostgreSQL, if it answers."""
    url = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return url
    except sa.exc.OperationalError:
        if os.environ.get("TEST_DATABASE_URL"):
            raise
        return None
    finally:
        engine.dispose()


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A fresh database on the server behind `admin_url`, dropped afterwards."""
    name = f"trainsvc_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(normalize_url(admin_url)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789"}


def add_keys(database: Database) -> None:
    """Register the test tenants' API keys."""
    with database.begin() as session:
        for tenant, key in KEYS.items():
            ensure_api_key(session, tenant, key)


def scratch_database(kind: str, tmp: Path, cleanup: ExitStack) -> str | None:
    """A migrated database holding the test keys: a SQLite file under `tmp`, or ("postgresql")
    a fresh PostgreSQL database dropped at cleanup; None when PostgreSQL does not answer."""
    if kind == "postgresql":
        admin = postgres_admin_url()
        if admin is None:
            return None
        url = cleanup.enter_context(scratch_postgres(admin))
    else:
        url = f"sqlite:///{tmp / 'service.db'}"
    migrate.upgrade(url)
    database = Database(url)
    add_keys(database)
    database.dispose()
    return url


def private_queue(broker: str, cleanup: ExitStack) -> str:
    """A queue name of this test's own, deleted from Redis at cleanup."""
    queue = f"trainsvc-test-{uuid.uuid4().hex[:8]}"
    if broker.startswith("redis"):
        cleanup.callback(delete_queue, broker, queue)
    return queue


def stack_env(
    url: str, tmp: Path, cleanup: ExitStack, broker: str | None = None, **extra: str
) -> dict[str, str]:
    """The settings a test's API and worker processes share: the database at `url`, `broker`
    (default: Redis when it answers, else the embedded broker under `tmp`), a private queue
    deleted at cleanup, `tmp` as VAR_DIR; plus `extra`."""
    broker = broker or redis_url() or f"filesystem://{tmp / 'broker'}"
    return {
        "DATABASE_URL": url,
        "BROKER_URL": broker,
        "QUEUE_NAME": private_queue(broker, cleanup),
        "VAR_DIR": str(tmp),
        **extra,
    }


def delete_queue(url: str, queue: str) -> None:
    with suppress(redis.RedisError):
        redis.Redis.from_url(url, socket_connect_timeout=1).delete(queue)


# A job that trains in a fraction of a second.
TINY_SPEC: dict[str, Any] = {
    "dataset": {"builtin": "make_moons", "params": {"n_samples": 100, "noise": 0.1}},
    "layers": [
        {"type": "dense", "units": 4, "activation": "relu"},
        {"type": "dense", "units": 2, "activation": "softmax"},
    ],
    "loss": "sparse_categorical_crossentropy",
    "epochs": 20,
}
# About half a second: long enough that "two job lengths" is more than the broker's delivery time
# and a pool process's replacement (after a job that leaves it above WORKER_MAX_MEMORY_PER_CHILD).
HALF_SECOND_SPEC: dict[str, Any] = {**TINY_SPEC, "epochs": 400}


class LoggedProcess:
    """A child process of ours with its output in a log file; `stop()` ends it."""

    name = "process"

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_until(self, ready: Any, timeout: float) -> None:
        """Poll `ready()` until it holds; fail with the log if the process exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class WorkerProcess(LoggedProcess):
    """A real Celery worker in its own process, consuming one private queue."""

    name = "worker"

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 1) -> None:
        # A node name of its own: several test workers on one host count as several workers.
        node = f"w{uuid.uuid4().hex[:8]}@%h"
        argv = [*worker_command(env["QUEUE_NAME"], concurrency), "--without-heartbeat", "-n", node]
        super().__init__(argv, env, log_path)

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_until(lambda: b" ready." in self.log_path.read_bytes(), timeout)


def wait_for_job(
    client: FlaskClient,
    job_id: str,
    headers: dict[str, str],
    statuses: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"}),
    timeout: float = 120,
    until: Any = None,
) -> dict[str, Any]:
    """Poll the job over HTTP until its status is in `statuses` (or `until(job)` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=headers).get_json()
        if job["status"] in statuses or (until is not None and until(job)):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.1)


def child_pids(pid: int) -> list[int]:
    """The direct children of `pid` (Linux /proc)."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split()
        pids.extend(int(c) for c in children)
    return pids


def kill_pool_processes(worker: WorkerProcess) -> list[int]:
    """SIGKILL the worker's pool processes (the main process lives on and replaces them)."""
    import signal

    pids = child_pids(worker.proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL the whole worker: main process and pool processes, no chance to clean up."""
    import signal

    pids = child_pids(worker.proc.pid)
    os.kill(worker.proc.pid, signal.SIGKILL)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.proc.wait()


class RedisServer:
    """A private redis-server on a free port, which a test may kill and restart at will."""

    def __init__(self, workdir: Path) -> None:
        import shutil
        import socket

        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = redis_command(self.binary, self.port, self.workdir)
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()


def diverging_spec(engine: str = "numpy") -> dict[str, Any]:
    """A regression job whose loss blows up within a few epochs (SGD, learning rate 10)."""
    return {
        "engine": engine,
        "name": "diverges",
        "dataset": {
            "builtin": "make_regression",
            "params": {"n_samples": 300, "n_features": 5, "noise": 5},
        },
        "layers": [
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "dense", "units": 1},
        ],
        "loss": "mse",
        "optimizer": {"type": "sgd", "learning_rate": 10, "momentum": 0.9},
        "epochs": 100,
    }


def raw_features(data: Any, scaled: Any) -> Any:
    """Undo the stored standardization: the features a client would send for these rows."""
    return scaled.astype("float64") * data.scaler_scale + data.scaler_mean


def wait_for_log(worker: WorkerProcess, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log():
        assert time.monotonic() < deadline, f"the worker never logged {text!r}"
        time.sleep(0.1)


def overfitting_spec(engine: str, **changes: Any) -> dict[str, Any]:
    """A big network on a small noisy set: it overfits within a few epochs, so early
    stopping on val_loss (patience 3, best weights restored) triggers."""
    spec: dict[str, Any] = {
        "engine": engine,
        "dataset": {
            "builtin": "make_classification",
            "params": {
                "n_samples": 300,
                "n_features": 20,
                "n_informative": 3,
                "flip_y": 0.3,
                "random_state": 1,
            },
        },
        "split": {"test_size": 0.2, "validation_split": changes.pop("validation_split", 0.3)},
        "preprocessing": {"standardize": True},
        "layers": [
            {"type": "dense", "units": 128, "activation": "relu"},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"type": "adam", "learning_rate": 0.01},
        "epochs": 200,
        "batch_size": 16,
        "early_stopping": {"monitor": "val_loss", "patience": 3, "restore_best_weights": True},
    }
    spec.update(changes)
    return spec
