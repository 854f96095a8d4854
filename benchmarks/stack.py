"""A throwaway local stack for the benchmarks: SQLite, a key, trained models, gunicorn."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from core import migrate
from core.db import Database
from core.spec import parse_spec
from service.auth import ensure_api_key
from service.jobs import create_job
from service.stack import api_command, free_port
from worker.jobs import run_job

ROOT = Path(__file__).resolve().parent.parent
SEED: dict[str, Any] = json.loads((ROOT / "examples" / "seed_job.json").read_text())
KEY = "bench-key-0123456789"


def prepare_database(tmp: Path) -> tuple[str, Database]:
    url = f"sqlite:///{tmp / 'bench.db'}"
    migrate.upgrade(url)
    db = Database(url)
    with db.begin() as session:
        ensure_api_key(session, "bench", KEY)
    return url, db


def worker_env(url: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The settings a benchmark's API and worker processes share: its database, Redis when it
    answers (else the embedded broker), a private queue, no request limits; plus `extra`."""
    from tests.support import redis_url

    return {
        "DATABASE_URL": url,
        "BROKER_URL": redis_url() or f"filesystem://{tmp / 'broker'}",
        "QUEUE_NAME": f"bench-{uuid.uuid4().hex[:8]}",
        "VAR_DIR": str(tmp),
        "RATE_LIMIT_PER_MINUTE": "0",
        **extra,
    }


def train_model(db: Database, engine: str, **changes: Any) -> str:
    """Train the seed job (or a variant) in this process; returns the model id."""
    raw = copy.deepcopy(SEED)
    raw.update(engine=engine, **changes)
    spec = parse_spec(raw)
    with db.begin() as session:
        job = create_job(spec, session=session, tenant_id="bench")
        job_id = job.id
    assert run_job(db, job_id) == "succeeded"
    with db.begin() as session:
        from core.models import Job

        found = session.get(Job, job_id)
        assert found is not None and found.model_id is not None
        return found.model_id


def start_gunicorn(
    url: str, tmp: Path, workers: int = 2, app: str | None = None, **env: str
) -> tuple[Any, int]:
    """Gunicorn with the shipped configuration serving the API (or `app`, another factory)."""
    port = free_port()
    command = api_command("127.0.0.1", port, "--workers", str(workers))
    if app is not None:
        command[-1] = app
    proc = subprocess.Popen(
        # The shipped configuration, as `make run` and compose use it.
        command,
        env={
            **os.environ,
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": url,
            "BROKER_URL": f"filesystem://{tmp / 'broker'}",
            "RATE_LIMIT_PER_MINUTE": "0",
            **env,
        },
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
