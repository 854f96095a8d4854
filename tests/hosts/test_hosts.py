"""The multi-host scenarios at a short size (`make hosts` runs them full size).

They need root and working `ip netns` (network namespaces), plus redis-server and PostgreSQL's
server binaries for the data host; otherwise each test skips saying why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.hosts import scenarios
from tests.hosts.cluster import Cluster
from tests.hosts.net import why_unusable

pytestmark = pytest.mark.integration

UNUSABLE = why_unusable()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if UNUSABLE:
        pytest.skip(UNUSABLE)
    with ExitStack() as cleanup:
        yield Cluster.start(cleanup)


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def report(figures: dict[str, Any]) -> dict[str, Any]:
    print("\n" + json.dumps(figures))
    return figures


def check_jobs(f: dict[str, Any]) -> None:
    assert f["finished"] == f["submitted"] and f["lost"] == 0, f
    assert f["duplicates"] == 0 and f["5xx"] == 0 and f["hangs"] == 0, f


def test_jobs_spread_over_both_worker_hosts(
    cluster: Cluster, tmp_path: Path, cleanup: ExitStack
) -> None:
    f = report(scenarios.both_hosts(cluster, tmp_path, cleanup, jobs=10))
    check_jobs(f)
    assert f["succeeded"] == 10
    assert all(n > 0 for n in f["claims"].values()), f  # both hosts trained


def test_a_cut_off_worker_host_is_taken_over_fenced_and_goes_on_working(
    cluster: Cluster, tmp_path: Path, cleanup: ExitStack
) -> None:
    f = report(scenarios.worker_host_cut(cluster, tmp_path, cleanup, jobs=4))
    check_jobs(f)
    assert f["succeeded"] == f["submitted"]
    # Taken over (attempt 2; on a loaded machine a slow heartbeat may cost one more).
    assert f["victim_status"] == "succeeded" and f["victim_attempts"] >= 2, f
    assert f["victim_epochs_once"], f
    # The cut-off attempt wrote nothing after the takeover: its late write was refused by the
    # attempt fence, or (when its connection broke on the way back) never reached the database.
    assert f["late_writes_fenced"] + f["w1_lost_db"] >= 1, f
    assert f["w1_claims_after_heal"] >= 1, f
    assert f["recover_s"] < 15, f


def test_data_host_restarts_answer_503_and_end_every_job(
    cluster: Cluster, tmp_path: Path, cleanup: ExitStack
) -> None:
    f = report(scenarios.data_restarts(cluster, tmp_path, cleanup, jobs=4))
    check_jobs(f)
    assert f["without_reason"] == 0, f
    assert set(f["during_pg"]) == {503}, f  # JSON 503 while PostgreSQL is down (no 500)
    assert f["slowest_answer_while_pg_down_s"] < 5, f
    assert 202 in f["during_redis"], f  # jobs are still taken while the broker is down


def test_an_api_host_cut_off_from_the_data_host_is_not_ready_and_recovers(
    cluster: Cluster, tmp_path: Path, cleanup: ExitStack
) -> None:
    f = report(scenarios.api_host_cut(cluster, tmp_path, cleanup, cut_seconds=6))
    assert f["readyz_503_after_s"] < 10, f
    assert f["healthz_during"] == [200], f
    assert f["jobs_during"] == 503 and f["jobs_answer_s"] < 10, f
    assert f["jobs_after"] == 200 and f["recover_s"] < 20, f
    assert f["5xx"] == 0 and f["hangs"] == 0, f


def test_a_slow_lossy_path_finishes_every_job_once(
    cluster: Cluster, tmp_path: Path, cleanup: ExitStack
) -> None:
    # A higher cut rate than the full run's 2 %, so a short run sees cuts too.
    f = report(scenarios.lossy_path(cluster, tmp_path, cleanup, jobs=4, cut=0.1, epochs=4))
    check_jobs(f)
    assert f["succeeded"] == 4, f


@pytest.mark.skipif(
    not scenarios.skew_hook_present(),
    reason="the CLOCK_SKEW_SECONDS test hook (branch checkpoints: one clock, the database's) "
    "is not in this tree",
)
def test_a_worker_host_with_its_clock_ahead_fails_no_healthy_job(
    cluster: Cluster, tmp_path: Path, cleanup: ExitStack
) -> None:
    f = report(scenarios.clock_skew(cluster, tmp_path, cleanup, jobs=6))
    check_jobs(f)
    assert f["first_attempt"] == f["submitted"], f
    assert f["worker_lost"] == 0, f
