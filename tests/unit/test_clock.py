"""One clock, the database's: what a worker writes and what the reaper compares never read the
host's own clock; CLOCK_SKEW_SECONDS shifts that own clock (tests only) and nothing else."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from core import clock
from core.db import Database, db_now, read_db_now
from core.models import Job, new_id
from core.settings import Settings
from core.spec import parse_spec
from service.jobs import create_job
from tests.support import TINY_SPEC
from worker.reaper import reap_once


@pytest.fixture
def skewed() -> Iterator[None]:
    clock.set_skew(90)
    try:
        yield
    finally:
        clock.set_skew(0)


def test_the_skew_shifts_this_process_s_clock_and_new_ids_only(
    database: Database, skewed: None
) -> None:
    assert abs(clock.wall_time() - time.time() - 90) < 1
    assert abs((uuid.UUID(new_id()).int >> 80) / 1000 - time.time() - 90) < 1
    with database.session() as session:
        server = read_db_now(session)
    assert abs((server - datetime.now(UTC)).total_seconds()) < 1  # the database's is unmoved


def test_db_now_is_precise_and_compares_with_stored_times(database: Database) -> None:
    with database.session() as session:
        first = read_db_now(session)
        time.sleep(0.01)
        second = read_db_now(session)
        assert first < second < first + timedelta(seconds=1)
        assert session.scalar(select(db_now(-30) < db_now())) in (True, 1)
        ahead = session.scalar(select(db_now(90)))
        assert ahead is not None
        ahead = ahead if ahead.tzinfo else ahead.replace(tzinfo=UTC)
        assert abs((ahead - second).total_seconds() - 90) < 1


def test_a_stale_job_s_last_failure_names_the_silence_and_the_host(database: Database) -> None:
    settings = Settings(max_attempts=3)
    with database.session() as session:
        job_id = create_job(parse_spec(TINY_SPEC), session=session, tenant_id="alice").id
    with database.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                attempts=3,
                worker="w1@host-a pid 4242",
                started_at=db_now(-100),
                heartbeat_at=db_now(-95),
            )
        )
    report = reap_once(database, lambda job_id: None, settings)
    assert report.failed == [job_id]
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.error_code == "worker_lost"
        message = job.error_message or ""
    assert message.startswith("no heartbeat for 95 s from w1@host-a pid 4242"), message
    assert "memory" not in message


def test_a_fresh_heartbeat_is_not_stale_whatever_this_host_s_clock_says(
    database: Database, skewed: None
) -> None:
    with database.session() as session:
        job_id = create_job(parse_spec(TINY_SPEC), session=session, tenant_id="alice").id
    with database.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", attempts=1, started_at=db_now(), heartbeat_at=db_now(-1))
        )
    report = reap_once(database, lambda job_id: None, Settings())
    assert report.requeued == [] and report.failed == []
