"""A real stack per database backend: the API in-process, a Celery worker process, a real broker.

The broker is Redis when it answers (REDIS_URL, else localhost), else the embedded filesystem
broker; the database is SQLite, and PostgreSQL when it answers (TEST_DATABASE_URL, else
localhost). Each stack consumes a private queue, so parallel runs on one Redis do not mix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from core import migrate
from core.db import Database
from core.settings import Settings
from service.app import create_app
from tests.conftest import add_keys, auth
from tests.support import WorkerProcess, postgres_admin_url, redis_url, scratch_postgres


@dataclass
class Stack:
    client: FlaskClient
    database: Database
    worker: WorkerProcess
    settings: Settings


def submit(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    """POST a job as alice; it must be accepted."""
    response = stack.client.post("/v1/jobs", json=spec, headers=auth("alice"))
    assert response.status_code == 202, response.get_json()
    job: dict[str, Any] = response.get_json()
    return job


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return redis_url() or f"filesystem://{tmp_path_factory.mktemp('broker')}"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, broker_url: str
) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp(request.param)
    with ExitStack() as cleanup:
        if request.param == "postgresql":
            admin = postgres_admin_url()
            if admin is None:
                pytest.skip("PostgreSQL is not answering on this machine")
            url = cleanup.enter_context(scratch_postgres(admin))
        else:
            url = f"sqlite:///{tmp / 'service.db'}"
        migrate.upgrade(url)
        database = Database(url)
        cleanup.callback(database.dispose)
        add_keys(database)
        queue_name = f"trainsvc-test-{uuid.uuid4().hex[:8]}"
        env = {
            "DATABASE_URL": url,
            "BROKER_URL": broker_url,
            "QUEUE_NAME": queue_name,
            "METRICS_FLUSH_SECONDS": "0.2",
            "VAR_DIR": str(tmp),
        }
        settings = Settings.from_env(env)
        worker = WorkerProcess(env, tmp / "worker.log")
        cleanup.callback(worker.stop)
        if broker_url.startswith("redis"):
            cleanup.callback(lambda: redis.Redis.from_url(broker_url).delete(queue_name))
        worker.wait_ready()
        app = create_app(settings)
        yield Stack(app.test_client(), database, worker, settings)
