"""Every job ends in a terminal state with a reason, whatever happens to workers and broker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from core.models import Job, utcnow
from core.settings import Settings
from tests.integration import harness
from tests.integration.harness import Harness, job_spec
from tests.support import RedisServer
from worker.reaper import reap_once

pytestmark = pytest.mark.integration


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_a_killed_pool_process_is_replaced_and_the_job_trained_again(
    tmp_path: Path, cleanup: ExitStack
) -> None:
    h = Harness.start(tmp_path, cleanup)
    result = harness.pool_process_killed(h)
    assert result["succeeded"] == 1 and result["attempts"] == 2
    assert result["duplicates"] == 0 and result["lost"] == 0 and result["5xx"] == 0
    assert result["history_once"]  # the retry's history, each epoch once


def test_a_new_worker_finishes_the_work_of_a_killed_one(tmp_path: Path, cleanup: ExitStack) -> None:
    h = Harness.start(tmp_path, cleanup)
    result = harness.whole_worker_killed(h)
    assert result["succeeded"] == result["submitted"] == 3
    assert result["attempts"] == 2 and result["duplicates"] == 0 and result["lost"] == 0
    assert result["recover_s"] < 15  # stale after 2 s, reaped every 0.5 s, plus worker start


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(
    tmp_path: Path, cleanup: ExitStack
) -> None:
    h = Harness.start(tmp_path, cleanup)
    result = harness.poison_job(h)
    assert result["poison_status"] == "failed" and result["poison_code"] == "worker_lost"
    assert result["poison_attempts"] == 3
    assert result["succeeded"] == 3  # the jobs queued behind it still ran


def test_a_broker_restart_loses_no_job_and_trains_none_twice(
    tmp_path: Path, cleanup: ExitStack
) -> None:
    try:
        server = RedisServer(tmp_path)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    cleanup.callback(server.stop)
    h = Harness.start(tmp_path, cleanup, broker_url=server.url)
    result = harness.broker_restarted(h, server)
    assert result["succeeded"] == result["submitted"] == 6
    assert result["lost"] == 0 and result["duplicates"] == 0 and result["5xx"] == 0
    assert result["attempts"] == [1]  # nothing was trained twice


def test_a_runaway_job_fails_with_code_timeout(tmp_path: Path, cleanup: ExitStack) -> None:
    h = Harness.start(tmp_path, cleanup, JOB_SOFT_TIME_LIMIT="3", JOB_TIME_LIMIT="8")
    h.start_worker()
    job_id = h.submit(job_spec(rows=20_000, epochs=2000, name="runaway"))
    job = h.wait_until(job_id, lambda j: j["status"] in harness.TERMINAL, timeout=60)
    assert job["status"] == "failed" and job["error"]["code"] == "timeout"
    after = h.submit(job_spec(rows=500, epochs=2, name="after"))
    assert h.wait_until(after, lambda j: j["status"] in harness.TERMINAL)["status"] == "succeeded"


def test_the_reaper_fails_a_job_killed_by_the_hard_limit(
    tmp_path: Path, cleanup: ExitStack
) -> None:
    h = Harness.start(tmp_path, cleanup)
    job_id = h.submit(job_spec(name="stuck"))
    long_ago = utcnow() - timedelta(hours=2)
    with h.db.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                attempts=1,
                started_at=long_ago,
                heartbeat_at=long_ago + timedelta(seconds=3700),
            )
        )
    settings = Settings.from_env(h.env)
    sent: list[str] = []
    report = reap_once(h.db, sent.append, settings)
    assert report.failed == [job_id] and sent == []
    job = h.job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "timeout"
