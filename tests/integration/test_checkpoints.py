"""Through failures, on real worker processes: one clock (the database's), a dead pool process's
job taken over at once, and a retried job resumed from its checkpoint."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.artifact import Artifact
from core.models import Job, JobCheckpoint, JobMetric, Model
from tests.integration import harness
from tests.integration.harness import ALICE, Harness, job_spec
from tests.support import kill_pool_processes

pytestmark = pytest.mark.integration


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def id_seconds(row_id: str) -> float:
    """The wall time (seconds) in a UUIDv7-style id's prefix: the clock of whoever made it."""
    return (uuid.UUID(row_id).int >> 80) / 1000


def test_a_worker_whose_clock_runs_90_s_ahead_fails_no_job_of_its_peers(
    tmp_path: Path, cleanup: ExitStack
) -> None:
    h = Harness.start(tmp_path, cleanup)
    h.start_worker()
    h.start_worker(CLOCK_SKEW_SECONDS="90")
    ids = [h.submit(job_spec(rows=3000, epochs=25, name=f"job-{i}")) for i in range(10)]
    final = h.wait_all(ids)
    assert {j["status"] for j in final.values()} == {"succeeded"}, final
    assert {j["attempts"] for j in final.values()} == {1}
    assert all(j["error"] is None for j in final.values())
    with h.db.begin() as session:
        ran = dict(session.execute(select(Job.model_id, Job.worker).where(Job.id.in_(ids))).all())
    nodes = {str(worker).split(" pid ")[0] for worker in ran.values()}
    assert len(nodes) == 2  # both workers trained
    # The hook did shift the skewed worker's clock: the model ids it made carry a time 90 s on.
    offsets = sorted(
        id_seconds(model_id) - id_seconds(job_id)
        for job_id, model_id in ((job_id, final[job_id]["model_id"]) for job_id in ids)
    )
    assert offsets[0] < 30 and offsets[-1] > 80


def wait_for_checkpoint(h: Harness, job_id: str, epoch: int, timeout: float = 60) -> int:
    """Wait until the job has a checkpoint at `epoch` or later; returns its epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with h.db.begin() as session:
            stored = session.scalar(
                select(JobCheckpoint.epoch).where(JobCheckpoint.job_id == job_id)
            )
        if stored is not None and stored >= epoch:
            return int(stored)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} stored no checkpoint at epoch {epoch} or later")


def model_arrays(h: Harness, job_id: str) -> dict[str, Any]:
    with h.db.begin() as session:
        blob = session.scalar(select(Model.weights).where(Model.job_id == job_id))
    assert blob is not None
    return Artifact.from_bytes(blob).arrays


def epochs_stored(h: Harness, job_id: str) -> list[int]:
    with h.db.begin() as session:
        return list(
            session.scalars(
                select(JobMetric.epoch).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
            )
        )


@pytest.mark.parametrize("engine", ["numpy", "keras"])
def test_a_killed_pool_process_s_job_runs_again_at_once_and_resumes_from_its_checkpoint(
    tmp_path: Path, cleanup: ExitStack, engine: str
) -> None:
    # Staleness is a minute away: only the worker's main process can hand the job back in time.
    h = Harness.start(
        tmp_path, cleanup, STALE_AFTER_SECONDS="60", HEARTBEAT_SECONDS="5", CHECKPOINT_SECONDS="0.3"
    )
    worker = h.start_worker()
    spec = {**job_spec(rows=4000, epochs=30, name="victim"), "engine": engine}
    victim = h.submit(spec)
    at = wait_for_checkpoint(h, victim, 3, timeout=120)
    killed = time.monotonic()
    kill_pool_processes(worker)
    again = h.wait_until(victim, lambda j: j["attempts"] == 2 and j["status"] == "running")
    takeover = time.monotonic() - killed
    assert takeover < 5, takeover
    final = h.wait_until(victim, lambda j: j["status"] in harness.TERMINAL)
    assert final["status"] == "succeeded" and final["attempts"] == 2
    resumed = final["resumed_from_epoch"]
    assert resumed is not None and resumed >= at, (resumed, at)
    assert again["resumed_from_epoch"] == resumed
    assert epochs_stored(h, victim) == list(range(1, 31))  # each epoch once
    assert h.models_per_job([victim]) == {victim: 1}
    with h.db.begin() as session:  # the checkpoint went with the job's end
        assert session.scalar(select(JobCheckpoint.job_id)) is None
    if engine == "numpy":
        # Bit for bit the model an uninterrupted run of the same seed makes.
        whole = h.submit({**spec, "name": "uninterrupted"})
        assert (
            h.wait_until(whole, lambda j: j["status"] in harness.TERMINAL)["status"] == "succeeded"
        )
        ours, theirs = model_arrays(h, victim), model_arrays(h, whole)
        assert ours.keys() == theirs.keys()
        for name, value in theirs.items():
            assert ours[name].tobytes() == value.tobytes(), name
        history = h.client.get(f"/v1/jobs/{victim}/metrics", headers=ALICE).get_json()["history"]
        unbroken = h.client.get(f"/v1/jobs/{whole}/metrics", headers=ALICE).get_json()["history"]
        assert [r["loss"] for r in history] == [r["loss"] for r in unbroken]


def test_a_warm_shutdown_checkpoints_its_job_and_gives_it_back(
    tmp_path: Path, cleanup: ExitStack
) -> None:
    # No timed checkpoints: the one the shutdown asks for is the only one.
    h = Harness.start(tmp_path, cleanup, CHECKPOINT_SECONDS="-1")
    first = h.start_worker()
    victim = h.submit(job_spec(rows=4000, epochs=40, name="victim"))
    h.wait_until(victim, lambda j: j["status"] == "running" and j["progress"]["epoch"] >= 2)
    first.proc.terminate()  # SIGTERM: Celery's warm shutdown
    first.proc.wait(timeout=60)
    back = h.job(victim)
    assert back["status"] == "queued" and back["attempts"] == 1, back
    with h.db.begin() as session:
        stored = session.scalar(select(JobCheckpoint.epoch).where(JobCheckpoint.job_id == victim))
    assert stored is not None and 2 <= stored < 40
    h.start_worker()
    final = h.wait_until(victim, lambda j: j["status"] in harness.TERMINAL)
    assert final["status"] == "succeeded" and final["attempts"] == 2, final
    assert final["resumed_from_epoch"] == stored
    assert epochs_stored(h, victim) == list(range(1, 41))
