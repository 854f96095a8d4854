"""A sweep stream's rounds while a worker commits between its reads: every epoch once, a
trial's end after its epochs, and the sweep's terminal event last."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select, update

from core.db import Database
from core.models import Job, JobMetric, Sweep
from core.settings import Settings
from service.sweep_events import SweepFeed
from tests.conftest import api_settings, auth
from tests.support import SEED_SPEC, scratch_database
from worker.sweeps import advance

EPOCHS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """The API on SQLite, then on a scratch PostgreSQL database (skipped if none answers)."""
    with ExitStack() as cleanup:
        url = scratch_database(request.param, tmp_path, cleanup)
        if url is None:
            pytest.skip("PostgreSQL is not running")
        yield api_settings(url, tmp_path)


def parse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def commit_epochs(database: Database, job_id: str, upto: int, end: bool = False) -> None:
    """What a worker's flush commits: the epoch rows up to `upto` with the trial's progress in
    one transaction; with `end`, the trial's success and then the sweep's end as well."""
    with database.begin() as session:
        done = set(session.scalars(select(JobMetric.epoch).where(JobMetric.job_id == job_id)))
        for epoch in range(1, upto + 1):
            if epoch not in done:
                session.add(JobMetric(job_id=job_id, epoch=epoch, loss=1.0 / epoch, seconds=0.01))
        session.execute(update(Job).where(Job.id == job_id).values(progress_epoch=upto))
    if end:
        with database.begin() as session:
            metrics = {"loss": 0.25, "val_loss": 0.3, "accuracy": 0.9}
            session.execute(
                update(Job).where(Job.id == job_id).values(status="succeeded", metrics=metrics)
            )
        with database.begin() as session:
            job = session.get(Job, job_id)
            assert job is not None
            session.execute(
                update(Sweep).where(Sweep.id == job.sweep_id).values(status="succeeded")
            )


def after_statement(database: Database, n: int, action: Callable[[], None]) -> Callable[[], None]:
    """Run `action` once, right after the next `n`th statement on the database; undo with the
    returned function."""
    state = {"seen": 0, "busy": False}

    def hook(*_: Any) -> None:
        if state["busy"] or state["seen"] >= n:
            return
        state["seen"] += 1
        if state["seen"] == n:
            state["busy"] = True
            action()
            state["busy"] = False

    event.listen(database.engine, "after_cursor_execute", hook)
    return lambda: event.remove(database.engine, "after_cursor_execute", hook)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_a_round_racing_the_worker_sends_each_epoch_once_and_ends_last(
    client: FlaskClient, database: Database, n: int
) -> None:
    spec = copy.deepcopy(SEED_SPEC)
    spec["epochs"] = EPOCHS
    body = {"spec": spec, "space": {"seed": {"choices": [0]}}, "strategy": "grid"}
    answer = client.post("/v1/sweeps", json=body, headers=auth("alice"))
    assert answer.status_code == 202, answer.get_json()
    sweep_id = answer.get_json()["id"]
    (job_id,) = advance(database, sweep_id)
    with database.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running", attempts=1))
        session.execute(update(Sweep).where(Sweep.id == sweep_id).values(status="running"))
    commit_epochs(database, job_id, 2)

    feed = SweepFeed(database, sweep_id)
    got = parse(feed.round())
    assert [e for e, _ in got] == ["trial", "epoch", "epoch", "sweep"]
    commit_epochs(database, job_id, 3)  # between two rounds
    # The rest of the trial, its end and the sweep's end land in the middle of the next round.
    undo = after_statement(database, n, lambda: commit_epochs(database, job_id, EPOCHS, True))
    try:
        for _ in range(5):
            got += parse(feed.round())
            if feed.finished:
                break
    finally:
        undo()
    assert feed.finished
    epochs = [data["epoch"] for kind, data in got if kind == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1))  # each once, in order
    kinds = [kind for kind, _ in got]
    assert kinds[-1] == "sweep" and got[-1][1]["status"] == "succeeded"
    assert got[-1][1]["progress"] == {"finished": 1, "total": 1}
    assert [d["status"] for k, d in got if k == "sweep"].count("succeeded") == 1
    ends = [i for i, (k, d) in enumerate(got) if k == "trial" and d["status"] == "succeeded"]
    assert len(ends) == 1 and ends[0] > max(i for i, k in enumerate(kinds) if k == "epoch")
