"""A real stack per database backend: the API in-process, a Celery worker process, a real broker.

The broker is Redis when it answers (REDIS_URL, else localhost), else the embedded filesystem
broker; the database is SQLite, and PostgreSQL when it answers (TEST_DATABASE_URL, else
localhost). Each stack consumes a private queue, so parallel runs on one Redis do not mix.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import Database
from core.models import Worker
from core.settings import Settings
from service.app import create_app
from tests.conftest import auth
from tests.support import WorkerProcess, redis_url, scratch_database, stack_env


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


def backend(kind: str, tmp: Path, cleanup: ExitStack) -> tuple[str, Database]:
    """A scratch database of `kind` (sqlite or postgresql), migrated and holding the test keys,
    and a handle on it, both dropped by `cleanup`; skips the test when PostgreSQL is not there."""
    url = scratch_database(kind, tmp, cleanup)
    if url is None:
        pytest.skip("PostgreSQL is not answering on this machine")
    database = Database(url)
    cleanup.callback(database.dispose)
    return url, database


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return redis_url() or f"filesystem://{tmp_path_factory.mktemp('broker')}"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, broker_url: str
) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp(request.param)
    with ExitStack() as cleanup:
        url, database = backend(request.param, tmp, cleanup)
        env = stack_env(url, tmp, cleanup, broker_url, METRICS_FLUSH_SECONDS="0.2")
        settings = Settings.from_env(env)
        worker = WorkerProcess(env, tmp / "worker.log")
        cleanup.callback(worker.stop)
        worker.wait_ready()
        app = create_app(settings)
        yield Stack(app.test_client(), database, worker, settings)


@pytest.fixture(params=["sqlite", "postgresql"])
def two_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Database]]:
    """The API in-process and two worker processes (one pool slot each) on a private queue,
    both registered (so the dispatcher counts two slots): for the fair-dispatch tests."""
    with ExitStack() as cleanup:
        url, database = backend(request.param, tmp_path, cleanup)
        env = stack_env(url, tmp_path, cleanup, TENANT_MAX_RUNNING="0")
        for i in range(2):
            worker = WorkerProcess(env, tmp_path / f"worker{i}.log")
            cleanup.callback(worker.stop)
            worker.wait_ready()
        deadline = time.monotonic() + 30
        while True:
            with database.session() as session:
                if len(list(session.scalars(select(Worker.name)))) == 2:
                    break
            assert time.monotonic() < deadline, "the workers did not register"
            time.sleep(0.1)
        yield create_app(Settings.from_env(env)).test_client(), database
