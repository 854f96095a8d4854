"""core.queries (tenant-scoped lookups, the cursor pager) and core.lru, on their own."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect

from core.db import Database
from core.lru import LRU
from core.models import Dataset, Job, Model
from core.queries import NotFound, find, owned, page


def add_jobs(database: Database, tenant: str, count: int) -> list[str]:
    """The ids of `count` new queued jobs of `tenant`."""
    with database.begin() as session:
        jobs = [Job(tenant_id=tenant, engine="numpy", spec={}) for _ in range(count)]
        session.add_all(jobs)
    return [job.id for job in jobs]


def test_owned_answers_the_tenants_row_and_not_found_for_anyone_else(database: Database) -> None:
    [job_id] = add_jobs(database, "alice", 1)
    with database.begin() as session:
        assert owned(session, Job, job_id, "alice").id == job_id
        assert find(session, Job, job_id, "bob") is None
        with pytest.raises(NotFound) as caught:
            owned(session, Job, job_id, "bob")
        assert str(caught.value) == f"no job with id {job_id!r}"
        assert (caught.value.kind, caught.value.row_id) == ("job", job_id)
        with pytest.raises(NotFound, match=r"^no dataset with id 'x'$"):
            owned(session, Dataset, "x", "alice")
        with pytest.raises(NotFound, match=r"^no model with id 'x'$"):
            owned(session, Model, "x", "alice")


def test_owned_can_leave_large_columns_unloaded(database: Database) -> None:
    with database.begin() as session:
        dataset = Dataset(
            tenant_id="alice",
            name="d",
            label="y",
            columns=["a", "y"],
            rows=2,
            label_kind="int",
            size_bytes=8,
            data=b"arrays",
        )
        session.add(dataset)
    with database.begin() as session:
        row = owned(session, Dataset, dataset.id, "alice", columns=(Dataset.name,))
        assert row.name == "d" and "data" in inspect(row).unloaded


def test_page_is_newest_first_with_a_cursor_and_a_filter(database: Database) -> None:
    ids = sorted(add_jobs(database, "alice", 5))  # ids made in one millisecond order at random
    add_jobs(database, "bob", 2)
    with database.begin() as session:
        first, cursor = page(session, Job, "alice", limit=2, cursor=None)
        assert [j.id for j in first] == ids[::-1][:2] and cursor == ids[3]
        second, cursor = page(session, Job, "alice", limit=2, cursor=cursor)
        assert [j.id for j in second] == ids[::-1][2:4]
        last, cursor = page(session, Job, "alice", limit=2, cursor=cursor)
        assert [j.id for j in last] == ids[:1] and cursor is None
        exact, cursor = page(session, Job, "alice", limit=5, cursor=None)
        assert len(exact) == 5 and cursor is None
        none, _ = page(session, Job, "alice", Job.status == "running", limit=5, cursor=None)
        assert none == []


def test_lru_is_bounded_and_keeps_the_most_recently_used() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.set("c", 3)
    assert len(cache) == 2 and cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    assert LRU[str, int](0).size == 1


def test_lru_stays_bounded_under_threads() -> None:
    cache: LRU[int, int] = LRU(50)

    def fill(offset: int) -> None:
        for i in range(2000):
            cache.set(offset + i, i)
            cache.get(offset + i // 2)

    threads = [threading.Thread(target=fill, args=(n * 10_000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50
