"""Fair dispatch against real workers: one tenant's 200 queued jobs do not hold back another's."""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from core.db import Database
from core.models import Job
from core.spec import parse_spec
from service.jobs import create_job
from tests.conftest import auth
from tests.support import (
    HALF_SECOND_SPEC,
    TINY_SPEC,
)

pytestmark = pytest.mark.integration


def seconds(later: datetime | None, earlier: datetime | None) -> float:
    assert later is not None and earlier is not None
    return (later - earlier).total_seconds()


def test_another_tenants_job_starts_within_two_job_lengths(
    two_workers: tuple[Any, Database],
) -> None:
    client, database = two_workers
    for _ in range(200):
        answer = client.post("/v1/jobs", json=HALF_SECOND_SPEC, headers=auth("alice"))
        assert answer.status_code == 202, answer.get_json()
    # Let a's jobs run a while, so the queue is busy and job lengths are known.
    deadline = time.monotonic() + 120
    while True:
        with database.session() as session:
            done = list(
                session.scalars(
                    select(Job).where(Job.tenant_id == "alice", Job.status == "succeeded")
                )
            )
        if len(done) >= 6:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    length = statistics.median(seconds(j.finished_at, j.started_at) for j in done)
    b_id = client.post("/v1/jobs", json=HALF_SECOND_SPEC, headers=auth("bob")).get_json()["id"]
    while True:
        with database.session() as session:
            b = session.get(Job, b_id)
            assert b is not None
            if b.started_at is not None:
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waited = seconds(b.started_at, b.created_at)
    sent_after = seconds(b.enqueued_at, b.created_at)
    with database.begin() as session:  # the rest of a's queue is not needed any more
        session.execute(
            update(Job)
            .where(Job.tenant_id == "alice", Job.status == "queued")
            .values(status="cancelled", error_code="cancelled", error_message="test over")
        )
    print(
        f"\nfair dispatch: 200 jobs of tenant A queued ({len(done)} done when B submitted), "
        f"B's job "
        f"started after {waited:.2f} s (sent after {sent_after:.2f} s); one job takes "
        f"{length:.2f} s (2 worker slots)"
    )
    assert waited <= 2 * length + 0.5  # dispatch and broker delivery on top


def test_a_job_never_sent_is_sent_by_the_workers_within_seconds(
    two_workers: tuple[Any, Database],
) -> None:
    """The API died between its commit and its send: the job waits unsent, and the workers'
    dispatchers send it at their next pass (DISPATCH_INTERVAL_SECONDS), not minutes later."""
    client, database = two_workers
    with database.session() as session:
        job = create_job(parse_spec(TINY_SPEC), session=session, tenant_id="alice")  # no dispatch
        job_id = job.id
    started = time.monotonic()
    while True:
        answer = client.get(f"/v1/jobs/{job_id}", headers=auth("alice")).get_json()
        if answer["status"] == "succeeded":
            break
        assert time.monotonic() - started < 10, answer
        time.sleep(0.05)
    print(f"\nan unsent job was sent and trained {time.monotonic() - started:.2f} s later")
