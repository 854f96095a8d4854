"""Pool process replacement: after WORKER_MAX_KERAS_JOBS_PER_CHILD Keras jobs, never for NumPy."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import Database
from core.models import Job
from core.settings import Settings
from service.app import create_app
from tests.conftest import auth
from tests.support import (
    TINY_SPEC,
    WorkerProcess,
    scratch_database,
    stack_env,
    wait_for_job,
)

pytestmark = pytest.mark.integration
ALICE = auth("alice")


def test_a_pool_process_is_replaced_after_keras_jobs_only(tmp_path: Path) -> None:
    with ExitStack() as cleanup:
        url = scratch_database("sqlite", tmp_path, cleanup)
        assert url is not None
        env = stack_env(url, tmp_path, cleanup, WORKER_MAX_KERAS_JOBS_PER_CHILD="2")
        worker = WorkerProcess(env, tmp_path / "worker.log")
        cleanup.callback(worker.stop)
        worker.wait_ready()
        client = create_app(Settings.from_env(env)).test_client()
        database = Database(url)
        cleanup.callback(database.dispose)

        def run(engine: str) -> str:
            answer = client.post("/v1/jobs", json={**TINY_SPEC, "engine": engine}, headers=ALICE)
            assert answer.status_code == 202, answer.get_json()
            job = wait_for_job(client, answer.get_json()["id"], ALICE, timeout=180)
            assert job["status"] == "succeeded", job["error"]
            with database.session() as session:  # "<node> pid <N>": the pool process
                return str(session.scalar(select(Job.worker).where(Job.id == job["id"])))

        numpy_runs = [run("numpy") for _ in range(4)]
        # Four NumPy jobs: one process throughout (the old default replaced it every 20 jobs).
        assert len(set(numpy_runs)) == 1, numpy_runs
        keras_runs = [run("keras") for _ in range(2)]
        assert set(keras_runs) == set(numpy_runs), "replaced before the second Keras job ended"
        after = run("numpy")
        assert after != numpy_runs[0], "not replaced after two Keras jobs"
        assert b"it is replaced after this task" in worker.log_path.read_bytes()
