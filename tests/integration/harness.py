"""A whole stack on real processes, and the failure scenarios run against it.

Used by the reliability tests (small sizes) and by `make reliability` (larger sizes, printing
one line of figures per scenario).
"""

from __future__ import annotations

import copy
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from core.db import Database
from core.models import Job, Model
from core.settings import Settings
from service.app import create_app
from tests.conftest import auth
from tests.support import (
    SEED_SPEC,
    RedisServer,
    WorkerProcess,
    kill_pool_processes,
    kill_worker,
    private_queue,
    redis_url,
    scratch_database,
)

ALICE = auth("alice")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

# Fast failure detection, so the scenarios finish in seconds.
FAST = {
    "HEARTBEAT_SECONDS": "0.5",
    "STALE_AFTER_SECONDS": "2",
    "REAP_INTERVAL_SECONDS": "0.5",
    "REQUEUE_AFTER_SECONDS": "2",
    "MAX_ATTEMPTS": "3",
    "METRICS_FLUSH_SECONDS": "0.2",
}


def job_spec(rows: int = 2000, epochs: int = 20, name: str = "job") -> dict[str, Any]:
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(name=name, epochs=epochs)
    spec["dataset"]["params"]["n_samples"] = rows
    return spec


@dataclass
class Harness:
    """API (in-process Flask client), worker processes, a database and a broker, all real."""

    tmp: Path
    database_url: str
    broker_url: str
    env: dict[str, str]
    cleanup: ExitStack
    workers: list[WorkerProcess] = field(default_factory=list)
    server_errors: int = 0
    app: Any = field(init=False)
    client: Any = field(init=False)
    db: Database = field(init=False)

    @classmethod
    def start(
        cls, tmp: Path, cleanup: ExitStack, *, broker_url: str | None = None, **env: str
    ) -> Harness:
        url = scratch_database("postgresql", tmp, cleanup) or scratch_database(
            "sqlite", tmp, cleanup
        )
        assert url is not None
        broker = broker_url or redis_url() or f"filesystem://{tmp / 'broker'}"
        queue = private_queue(broker, cleanup)
        full_env = {
            **FAST,
            **env,
            "DATABASE_URL": url,
            "BROKER_URL": broker,
            "QUEUE_NAME": queue,
            "VAR_DIR": str(tmp),
        }
        harness = cls(tmp, url, broker, full_env, cleanup)
        harness.app = create_app(Settings.from_env(full_env))
        harness.client = harness.app.test_client()
        harness.db = Database(url)
        cleanup.callback(harness.db.dispose)
        return harness

    def start_worker(self, concurrency: int = 1, **env: str) -> WorkerProcess:
        """Start a worker process; `env` adds to (or overrides) the harness's settings for it."""
        n = len(self.workers)
        worker = WorkerProcess(
            {**self.env, **env}, self.tmp / f"worker-{n}.log", concurrency=concurrency
        )
        self.cleanup.callback(worker.stop)
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.client.post("/v1/jobs", json=spec, headers=ALICE)
        if response.status_code >= 500:
            self.server_errors += 1
        assert response.status_code == 202, response.get_data(as_text=True)
        return str(response.get_json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/jobs/{job_id}", headers=ALICE)
        if response.status_code >= 500:
            self.server_errors += 1
        body: dict[str, Any] = response.get_json()
        return body

    def wait_until(self, job_id: str, check: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if check(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never got there: {job}")
            time.sleep(0.05)

    def wait_all(self, ids: list[str], timeout: float = 180) -> dict[str, dict[str, Any]]:
        return {i: self.wait_until(i, lambda j: j["status"] in TERMINAL, timeout) for i in ids}

    def models_per_job(self, ids: list[str]) -> dict[str, int]:
        with self.db.begin() as session:
            rows = session.execute(
                select(Model.job_id, func.count())
                .where(Model.job_id.in_(ids))
                .group_by(Model.job_id)
            ).all()
        counts = {job_id: 0 for job_id in ids}
        counts.update({job_id: n for job_id, n in rows})
        return counts

    def status_counts(self) -> dict[str, int]:
        with self.db.begin() as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {status: n for status, n in rows}


def figures(
    name: str,
    h: Harness,
    ids: list[str],
    final: dict[str, dict[str, Any]],
    recover: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    models = h.models_per_job(ids)
    out = {
        "scenario": name,
        "submitted": len(ids),
        "finished": sum(1 for j in final.values() if j["status"] in TERMINAL),
        "succeeded": sum(1 for j in final.values() if j["status"] == "succeeded"),
        "duplicates": sum(max(0, n - 1) for n in models.values()),
        "lost": sum(1 for j in final.values() if j["status"] not in TERMINAL),
        "5xx": h.server_errors,
        **extra,
    }
    if recover is not None:
        out["recover_s"] = round(recover, 2)
    return out


def pool_process_killed(h: Harness, jobs: int = 1) -> dict[str, Any]:
    """SIGKILL the pool process mid-training; the worker's main process hands the job back at
    once, and a new pool process resumes it from its checkpoint."""
    worker = h.start_worker()
    ids = [h.submit(job_spec(rows=5000, epochs=40, name=f"victim-{i}")) for i in range(jobs)]
    h.wait_until(ids[0], lambda j: j["status"] == "running" and j["progress"]["epoch"] >= 2)
    killed_at = time.monotonic()
    kill_pool_processes(worker)
    # Recovered once the job is back in the queue (it then waits its turn behind the others).
    h.wait_until(ids[0], lambda j: j["status"] == "queued" or j["attempts"] == 2)
    recovered = time.monotonic() - killed_at
    final = h.wait_all(ids)
    history = h.client.get(f"/v1/jobs/{ids[0]}/metrics", headers=ALICE).get_json()["history"]
    return figures(
        "pool process SIGKILLed",
        h,
        ids,
        final,
        recovered,
        attempts=final[ids[0]]["attempts"],
        history_once=[row["epoch"] for row in history] == list(range(1, 41)),
    )


def whole_worker_killed(h: Harness, jobs: int = 3) -> dict[str, Any]:
    """SIGKILL the worker and all its processes; a newly started worker finishes the work."""
    worker = h.start_worker()
    ids = [h.submit(job_spec(rows=4000, epochs=25, name=f"job-{i}")) for i in range(jobs)]
    h.wait_until(ids[0], lambda j: j["status"] == "running" and j["progress"]["epoch"] >= 2)
    kill_worker(worker)
    killed_at = time.monotonic()
    h.start_worker()
    h.wait_until(ids[0], lambda j: j["status"] == "queued" or j["attempts"] == 2)
    recovered = time.monotonic() - killed_at
    final = h.wait_all(ids)
    return figures(
        "whole worker SIGKILLed", h, ids, final, recovered, attempts=final[ids[0]]["attempts"]
    )


def poison_job(h: Harness, max_attempts: int = 3) -> dict[str, Any]:
    """A job whose worker dies every time ends failed after MAX_ATTEMPTS; the queue drains."""
    worker = h.start_worker()
    poison = h.submit(job_spec(rows=5000, epochs=200, name="poison"))
    for attempt in range(1, max_attempts + 1):
        h.wait_until(
            poison,
            lambda j, a=attempt: (
                j["status"] == "running" and j["attempts"] == a and j["progress"]["epoch"] >= 1
            ),
        )
        kill_pool_processes(worker)
    after = [h.submit(job_spec(rows=500, epochs=3, name=f"after-{i}")) for i in range(3)]
    final = h.wait_all([poison, *after])
    return figures(
        "job that kills its worker",
        h,
        [poison, *after],
        final,
        poison_status=final[poison]["status"],
        poison_code=(final[poison]["error"] or {}).get("code"),
        poison_attempts=final[poison]["attempts"],
    )


def broker_restarted(h: Harness, redis_server: RedisServer, jobs: int = 5) -> dict[str, Any]:
    """Redis killed (losing every message) and restarted while jobs run and wait."""
    h.start_worker()
    ids = [h.submit(job_spec(rows=3000, epochs=25, name=f"job-{i}")) for i in range(jobs)]
    h.wait_until(ids[0], lambda j: j["status"] == "running" and j["progress"]["epoch"] >= 1)
    redis_server.kill()
    down_at = time.monotonic()
    started = time.monotonic()
    during = h.submit(job_spec(rows=500, epochs=3, name="submitted-while-down"))
    post_seconds = time.monotonic() - started
    time.sleep(1.0)
    redis_server.start()
    ids.append(during)
    final = h.wait_all(ids, timeout=240)
    drained = time.monotonic() - down_at
    attempts = sorted({j["attempts"] for j in final.values()})
    return figures(
        "broker restarted (messages lost)",
        h,
        ids,
        final,
        None,
        attempts=attempts,
        post_while_down_s=round(post_seconds, 2),
        drain_s=round(drained, 1),
    )
