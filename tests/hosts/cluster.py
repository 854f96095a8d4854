"""The hosts and their processes: a data host (its own PostgreSQL and Redis), an API host
(gunicorn with the shipped configuration) and worker hosts (Celery workers as `make run` starts
them), each in its own network namespace, every connection between them crossing veth links.

The test driver reads the data host's PostgreSQL over its Unix socket (a file, not the network)
to set databases up and count models; everything the service does goes over the links.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
import sqlalchemy as sa

from core import migrate
from core.db import Database
from service.stack import api_command, worker_command
from tests.conftest import auth
from tests.hosts.net import Network
from tests.support import SEED_SPEC, LoggedProcess, add_keys

ROOT = Path(__file__).resolve().parents[2]
ALICE = auth("alice")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
PG_PORT, REDIS_PORT, API_PORT = 5432, 6379, 8000
PG_PROXY_PORT, REDIS_PROXY_PORT = 15432, 16379
POSTGRES_USER = "postgres"

# Short failure detection so that each scenario takes tens of seconds.
FAST = {
    "HEARTBEAT_SECONDS": "0.5",
    "STALE_AFTER_SECONDS": "3",
    "REAP_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "3",
    "DISPATCH_INTERVAL_SECONDS": "0.5",
    "MAX_ATTEMPTS": "3",
    "METRICS_FLUSH_SECONDS": "0.3",
    "DATABASE_TIMEOUT_SECONDS": "3",
    "LOG_FORMAT": "json",
    "AUTH_FAILURES_PER_MINUTE": "0",
    "RATE_LIMIT_PER_MINUTE": "0",
    "TENANT_MAX_RUNNING": "0",
    "SECRET_KEY": "hosts-harness-secret",
    "WEB_CONCURRENCY": "2",
}


def job_spec(rows: int = 2000, epochs: int = 20, name: str = "job") -> dict[str, Any]:
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(name=name, epochs=epochs)
    spec["dataset"]["params"]["n_samples"] = rows
    return spec


def as_postgres(argv: list[str]) -> list[str]:
    """Run `argv` as the postgres user (setpriv execs: the pid stays the command's)."""
    return ["setpriv", "--reuid", POSTGRES_USER, "--regid", POSTGRES_USER, "--init-groups", *argv]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `check()` holds; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not after {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - start


class DataHost:
    """PostgreSQL and Redis of the harness's own, bound to the data host's address only."""

    def __init__(self, net: Network, host: str, cleanup: ExitStack) -> None:
        self.net, self.host, self.address = net, host, net.hosts[host]
        # In /tmp (traversable by the postgres user), not under pytest's root-only folders.
        self.dir = Path(tempfile.mkdtemp(prefix=f"{net.tag}-data-"))
        cleanup.callback(shutil.rmtree, self.dir, True)
        self.pgdata = self.dir / "pg"
        os.chmod(self.dir, 0o755)  # noqa: S103 - postgres reads its folder
        shutil.chown(self.dir, POSTGRES_USER, POSTGRES_USER)
        subprocess.run(
            as_postgres(["initdb", "-D", str(self.pgdata), "-A", "trust", "-U", POSTGRES_USER,
                         "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True,
        )  # fmt: skip
        with open(self.pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {net.hosts[host].rsplit('.', 1)[0]}.0/24 trust\n")
        self.postgres: LoggedProcess | None = None
        self.redis: LoggedProcess | None = None
        self.socket_url = f"postgresql+psycopg://{POSTGRES_USER}@/postgres?host={self.dir}"
        cleanup.callback(self.stop)

    # PostgreSQL -------------------------------------------------------------------------------
    def start_postgres(self) -> None:
        argv = as_postgres(
            ["postgres", "-D", str(self.pgdata), "-p", str(PG_PORT),
             "-c", f"listen_addresses={self.address}", "-c", f"unix_socket_directories={self.dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"]
        )  # fmt: skip
        log = self.dir / f"postgres-{time.monotonic_ns()}.log"
        self.postgres = LoggedProcess([*self.net.exec_argv(self.host), *argv], {}, log)
        self.postgres.name = "postgres"
        self.postgres.wait_until(self.postgres_answers, 30)

    def postgres_answers(self) -> bool:
        engine = sa.create_engine(self.socket_url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    def stop_postgres(self) -> None:
        """A fast shutdown (SIGINT): every session cut, as in a restart."""
        if self.postgres is not None and self.postgres.proc.poll() is None:
            self.postgres.proc.send_signal(signal.SIGINT)
            try:
                self.postgres.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.postgres.proc.kill()
                self.postgres.proc.wait()
        if self.postgres is not None:
            self.postgres.stop()

    def new_database(self) -> tuple[str, str]:
        """A fresh, migrated database holding the test keys: (URL over the network, over the
        socket)."""
        name = f"hosts_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(self.socket_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        local = f"postgresql+psycopg://{POSTGRES_USER}@/{name}?host={self.dir}"
        migrate.upgrade(local)
        database = Database(local)
        add_keys(database)
        database.dispose()
        return f"postgresql://{POSTGRES_USER}@{self.address}:{PG_PORT}/{name}", local

    # Redis ------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        argv = [
            "redis-server", "--bind", self.address, "--port", str(REDIS_PORT),
            "--unixsocket", str(self.dir / "redis.sock"), "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--protected-mode", "no",
        ]  # fmt: skip
        log = self.dir / f"redis-{time.monotonic_ns()}.log"
        self.redis = LoggedProcess([*self.net.exec_argv(self.host), *argv], {}, log)
        self.redis.name = "redis"
        self.redis.wait_until(self.redis_answers, 15)

    def redis_answers(self) -> bool:
        try:
            client = redis.Redis(unix_socket_path=str(self.dir / "redis.sock"), socket_timeout=1)
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def kill_redis(self) -> None:
        """SIGKILL: every message held in memory is lost, as in a crash."""
        if self.redis is not None:
            self.redis.proc.kill()
            self.redis.proc.wait()
            self.redis.stop()

    def stop(self) -> None:
        self.kill_redis()
        self.stop_postgres()


@dataclass
class Client:
    """HTTP to the API host over the driver's link; counts server errors and slow answers."""

    base: str
    timeout: float = 15.0
    server_errors: int = 0  # 5xx other than a JSON 503
    unavailable: int = 0  # JSON 503 (the database or the broker is down: the answer we want)
    hangs: int = 0  # no answer within `timeout`
    slowest: float = 0.0
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response | None:
        start = time.monotonic()
        try:
            response = self.session.request(
                method, self.base + path, timeout=self.timeout, headers=ALICE, **kwargs
            )
        except requests.Timeout:
            self.hangs += 1
            return None
        except requests.ConnectionError:
            self.server_errors += 1
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - start)
        if response.status_code == 503 and _is_json_error(response):
            self.unavailable += 1
        elif response.status_code >= 500:
            self.server_errors += 1
        return response

    def submit(self, spec: dict[str, Any]) -> str:
        for _ in range(60):
            response = self.request("POST", "/v1/jobs", json=spec)
            if response is not None and response.status_code == 202:
                return str(response.json()["id"])
            time.sleep(0.5)  # 503 while a part is down: the client tries again
        raise AssertionError(
            f"submit never accepted: {response.text if response is not None else None}"
        )

    def job(self, job_id: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/v1/jobs/{job_id}")
        if response is None or response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body

    def wait_all(self, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Poll until every job is terminal (or `timeout`); the last answer for each."""
        deadline = time.monotonic() + timeout
        final: dict[str, dict[str, Any]] = {}
        pending = list(ids)
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                job = self.job(job_id)
                if job is not None:
                    final[job_id] = job
                    if job["status"] in TERMINAL:
                        pending.remove(job_id)
            if pending:
                time.sleep(0.5)
        return final

    def status(self, path: str) -> int | None:
        try:
            return self.session.get(self.base + path, timeout=self.timeout).status_code
        except requests.RequestException:
            return None


def _is_json_error(response: requests.Response) -> bool:
    try:
        return "error" in response.json()
    except ValueError:
        return False


class WorkerHost:
    """One worker host: a Celery worker (as `make run` starts it) inside the host's namespace."""

    def __init__(self, deployment: Deployment, host: str, env: dict[str, str], concurrency: int):
        self.host = host
        node = f"{host}-{uuid.uuid4().hex[:4]}@%h"
        argv = [*worker_command(env["QUEUE_NAME"], concurrency), "--without-heartbeat", "-n", node]
        argv = [*deployment.cluster.net.exec_argv(host), *argv]
        self.process = LoggedProcess(argv, env, deployment.tmp / f"worker-{host}.log")
        self.process.name = f"worker on {host}"

    def wait_ready(self, timeout: float = 90) -> None:
        self.process.wait_until(lambda: b" ready." in self.process.log_path.read_bytes(), timeout)

    def messages(self) -> list[str]:
        out: list[str] = []
        for line in self.process.log().splitlines():
            with suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(str(entry.get("message", "")))
        return out

    def count(self, text: str) -> int:
        return sum(text in message for message in self.messages())

    def claimed(self) -> int:
        return self.count(" claimed (attempt ")


@dataclass
class Deployment:
    """One scenario's service on the cluster: a fresh database and queue, the API, workers."""

    cluster: Cluster
    tmp: Path
    cleanup: ExitStack
    env: dict[str, str] = field(default_factory=dict)
    local_url: str = ""
    api: LoggedProcess | None = None
    workers: dict[str, WorkerHost] = field(default_factory=dict)
    client: Client = field(init=False)

    def __post_init__(self) -> None:
        url, self.local_url = self.cluster.data.new_database()
        data = self.cluster.data.address
        self.env = {
            **FAST,
            **self.env,
            "DATABASE_URL": url,
            "BROKER_URL": f"redis://{data}:{REDIS_PORT}/0",
            "REDIS_URL": f"redis://{data}:{REDIS_PORT}/0",
            "QUEUE_NAME": f"hosts-{uuid.uuid4().hex[:8]}",
            "VAR_DIR": str(self.tmp),
        }
        self.client = Client(f"http://{self.cluster.net.driver_address}:{API_PORT}")
        self.db = Database(self.local_url)
        self.cleanup.callback(self.db.dispose)
        self.cleanup.callback(self.stop)

    def start_api(self, wait: bool = True) -> None:
        """Gunicorn on the API host (on all its addresses: the switch's and the driver's);
        `wait=False` returns at once (`start_workers` waits for it too)."""
        argv = [*self.cluster.net.exec_argv("api"), *api_command("0.0.0.0", API_PORT)]  # noqa: S104
        self.api = LoggedProcess(argv, self.env, self.tmp / "api.log")
        self.api.name = "API"
        if wait:
            self.wait_api()

    def wait_api(self) -> None:
        assert self.api is not None
        self.api.wait_until(lambda: self.client.status("/healthz") == 200, 60)

    def start_workers(self, concurrency: int = 1, **per_host: dict[str, str]) -> None:
        """A worker on each worker host (both at once); `per_host` adds one host's variables."""
        for host in self.cluster.worker_hosts:
            env = {**self.env, **per_host.get(host, {})}
            worker = WorkerHost(self, host, env, concurrency)
            self.workers[host] = worker
        for worker in self.workers.values():
            worker.wait_ready()
        if self.api is not None:
            self.wait_api()

    def stop(self) -> None:
        """Stop the API and the workers together (each shutdown waits on its own)."""
        processes = [w.process for w in self.workers.values()]
        if self.api is not None:
            processes.append(self.api)
        for process in processes:
            if process.proc.poll() is None:
                process.proc.terminate()
        deadline = time.monotonic() + 20
        for process in processes:
            with suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            process.stop()  # kills one still running, closes its log

    def models_per_job(self, ids: list[str]) -> dict[str, int]:
        with self.db.begin() as session:
            rows = session.execute(
                sa.text("SELECT job_id, count(*) FROM models WHERE job_id = ANY(:ids) GROUP BY 1"),
                {"ids": ids},
            ).all()
        counts = dict.fromkeys(ids, 0)
        counts.update({job_id: int(n) for job_id, n in rows})
        return counts

    def epochs_twice(self, ids: list[str]) -> int:
        """Metric rows beyond one per epoch (cannot happen: the table's key is (job, epoch))."""
        with self.db.begin() as session:
            rows = session.execute(
                sa.text(
                    "SELECT count(*) - count(DISTINCT epoch) FROM job_metrics "
                    "WHERE job_id = ANY(:ids) GROUP BY job_id"
                ),
                {"ids": ids},
            ).all()
        return sum(int(n) for (n,) in rows)

    def figures(
        self,
        name: str,
        ids: list[str],
        final: dict[str, dict[str, Any]],
        recover: float | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        models = self.models_per_job(ids)
        out: dict[str, Any] = {
            "scenario": name,
            "submitted": len(ids),
            "finished": sum(1 for j in final.values() if j["status"] in TERMINAL),
            "succeeded": sum(1 for j in final.values() if j["status"] == "succeeded"),
            "duplicates": sum(max(0, n - 1) for n in models.values()),
            "lost": len(ids) - sum(1 for j in final.values() if j["status"] in TERMINAL),
            "5xx": self.client.server_errors,
            "hangs": self.client.hangs,
        }
        if recover is not None:
            out["recover_s"] = round(recover, 1)
        out.update(extra)
        return out


@dataclass
class Cluster:
    """The network, the data host's servers; deployments come and go per scenario."""

    net: Network
    data: DataHost
    worker_hosts: tuple[str, ...] = ("w1", "w2")
    proxy: LoggedProcess | None = None

    @classmethod
    def start(cls, cleanup: ExitStack) -> Cluster:
        net = Network()
        cleanup.callback(net.stop)
        net.start()
        for host in ("data", "api", "w1", "w2"):
            net.add_host(host)
        net.connect_driver("api")
        data = DataHost(net, "data", cleanup)
        data.start_postgres()
        data.start_redis()
        return cls(net, data)

    def start_proxy(self, tmp: Path, cleanup: ExitStack, cut: float = 0.02, seed: int = 1) -> str:
        """The fault-injecting proxy on the data host, in front of PostgreSQL and Redis;
        returns the address workers should use."""
        address = self.data.address
        argv = [
            *self.net.exec_argv("data"), sys.executable, "-m",
            "tests.hosts.proxy",
            f"{address}:{PG_PROXY_PORT}={address}:{PG_PORT}",
            f"{address}:{REDIS_PROXY_PORT}={address}:{REDIS_PORT}",
            "--cut", str(cut), "--seed", str(seed),
        ]  # fmt: skip
        proxy = LoggedProcess(argv, {}, tmp / "proxy.log")
        proxy.name = "proxy"
        cleanup.callback(proxy.stop)
        proxy.wait_until(lambda: "proxy ready" in proxy.log(), 20)
        self.proxy = proxy
        return address
