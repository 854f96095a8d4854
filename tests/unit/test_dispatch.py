"""Fair dispatch: free worker slots go round-robin between tenants, oldest first within one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from core import migrate
from core.db import Database
from core.dispatch import Quotas, choose, dispatch_once, register_worker
from core.models import Job, Tenant
from tests.support import postgres_admin_url, scratch_postgres

QUOTAS = Quotas(tenant_max_running=0, worker_seen_within=30)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'dispatch.db'}"
        else:
            admin = postgres_admin_url()
            if admin is None:
                pytest.skip("PostgreSQL does not answer")
            url = stack.enter_context(scratch_postgres(admin))
        migrate.upgrade(url)
        database = Database(url)
        with database.begin() as session:
            session.add_all([Tenant(id="a"), Tenant(id="b"), Tenant(id="c")])
        yield database
        database.dispose()


def queue_jobs(db: Database, tenant: str, n: int, status: str = "queued") -> list[str]:
    ids = [f"{tenant}-{i:04d}" for i in range(n)]
    with db.begin() as session:
        for job_id in ids:
            session.add(Job(id=job_id, tenant_id=tenant, engine="numpy", spec={}, status=status))
    return ids


def test_choose_ranks_a_tenants_nth_job_after_others_with_less_in_flight() -> None:
    waiting = [("a1", "a", 1), ("a2", "a", 2), ("a3", "a", 3), ("b1", "b", 1)]
    assert choose(waiting, {"a": 2}, free=1, max_running=0) == ["b1"]
    assert choose(waiting, {}, free=3, max_running=0) == ["a1", "b1", "a2"]
    assert choose(waiting, {"b": 1}, free=4, max_running=2) == ["a1", "a2", "b1"]


def test_with_one_slot_tenants_take_turns() -> None:
    # a just finished its job (0 in flight) but was served a moment ago; b never was.
    served = {"a": datetime(2026, 1, 1, tzinfo=UTC)}
    waiting = [("a1", "a", 1), ("a2", "a", 2), ("b1", "b", 1)]
    assert choose(waiting, {}, free=1, max_running=0, served=served) == ["b1"]
    served["b"] = datetime(2026, 1, 2, tzinfo=UTC)
    assert choose(waiting, {}, free=1, max_running=0, served=served) == ["a1"]


def test_without_workers_jobs_are_sent_as_they_come(db: Database) -> None:
    ids = queue_jobs(db, "a", 3)
    sent: list[str] = []
    assert dispatch_once(db, sent.append, QUOTAS) == ids == sent
    assert dispatch_once(db, sent.append, QUOTAS) == []  # marked sent: not sent twice


def test_free_slots_go_to_the_tenant_with_fewer_jobs_in_flight(db: Database) -> None:
    register_worker(db, "w1", 2)
    queue_jobs(db, "a", 200)
    sent: list[str] = []
    assert dispatch_once(db, sent.append, QUOTAS) == ["a-0000", "a-0001"]
    assert dispatch_once(db, sent.append, QUOTAS) == []  # both slots are taken
    (b_job,) = queue_jobs(db, "b", 1)
    with db.begin() as session:  # one of a's jobs ends: one slot frees up
        session.get(Job, "a-0000").status = "succeeded"  # type: ignore[union-attr]
    assert dispatch_once(db, sent.append, QUOTAS) == [b_job]


def test_one_slot_alternates_between_tenants(db: Database) -> None:
    register_worker(db, "w1", 1)
    queue_jobs(db, "a", 5)
    assert dispatch_once(db, lambda _: None, QUOTAS) == ["a-0000"]
    queue_jobs(db, "b", 2)
    order = []
    for _ in range(4):  # each job ends before the next pass: a always has 0 in flight then
        with db.begin() as session:
            session.execute(
                update(Job)
                .where(Job.enqueued_at.is_not(None), Job.status == "queued")
                .values(status="succeeded")
            )
        order += dispatch_once(db, lambda _: None, QUOTAS)
    assert order == ["b-0000", "a-0001", "b-0001", "a-0002"]


def test_a_tenant_cap_leaves_the_rest_waiting(db: Database) -> None:
    register_worker(db, "w1", 4)
    queue_jobs(db, "a", 5)
    capped = Quotas(tenant_max_running=1, worker_seen_within=30)
    assert dispatch_once(db, lambda _: None, capped) == ["a-0000"]


def test_a_job_is_marked_sent_only_once_the_broker_took_it(db: Database) -> None:
    queue_jobs(db, "a", 2)

    def broker_down(job_id: str) -> None:
        raise ConnectionError("broker down")

    assert dispatch_once(db, broker_down, QUOTAS) == []
    with db.session() as session:
        assert all(job.enqueued_at is None for job in session.query(Job))
    assert dispatch_once(db, lambda _: None, QUOTAS) == ["a-0000", "a-0001"]
