"""The hub that feeds every event stream of a process, and the per-tenant cap on open streams."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from core.db import Database
from core.settings import Settings
from service.app import create_app
from service.hub import Feed, Hub
from service.streamcap import MemoryStreamCap, NoStreamCap, RedisStreamCap, make_stream_cap
from tests.conftest import RecordingQueue, auth
from tests.sse import events as parse_events
from tests.support import redis_url
from tests.unit.test_api import assert_error, small_spec, submit
from tests.unit.test_live import add_epochs, set_status
from worker.jobs import claim

ALICE, BOB = auth("alice"), auth("bob")


@contextmanager
def counting_selects(database: Database) -> Iterator[list[str]]:
    """The SELECT statements the database runs meanwhile."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", note)


def test_a_round_costs_the_same_for_one_stream_or_hundreds(
    client: FlaskClient, database: Database
) -> None:
    jobs = [submit(client, small_spec(epochs=5)).get_json()["id"] for _ in range(3)]
    feed = Feed(database)
    entries = [feed.join(jobs[n % 3], "alice")[0] for n in range(300)]
    assert len(feed.watched) == 3 and entries[0] is entries[3]
    with counting_selects(database) as first:
        feed.poll()  # states, full rows (first read), epochs (none yet)
    with counting_selects(database) as idle:
        feed.poll()
    claim(database, jobs[0])
    add_epochs(database, jobs[0], 1, 2)
    add_epochs(database, jobs[1], 1)
    with counting_selects(database) as moved:
        feed.poll()  # states, the full row whose status changed, the new epochs of two jobs
    add_epochs(database, jobs[0], 3)
    with counting_selects(database) as progressed:
        feed.poll()
    assert (len(first), len(idle), len(moved), len(progressed)) == (3, 1, 3, 2)
    assert entries[0].epochs == [1, 2, 3] and entries[1].epochs == [1] and not entries[2].epochs
    assert entries[0].state == ("running", 1) and entries[0].version == 3
    for entry in entries:
        feed.leave(entry)
    assert not feed.watched


def test_a_job_is_watched_per_tenant_and_another_tenants_is_gone(
    client: FlaskClient, database: Database
) -> None:
    job = submit(client, small_spec()).get_json()["id"]
    feed = Feed(database)
    mine, _ = feed.join(job, "alice")
    theirs, _ = feed.join(job, "bob")
    feed.poll()
    assert mine is not theirs
    assert mine.state == ("queued", 0) and not mine.gone
    assert theirs.gone and theirs.state is None and not theirs.events


@pytest.fixture
def capped(tmp_path: Path, settings: Settings) -> Iterator[Flask]:
    """The app with at most 2 streams per tenant, counted in-process (the embedded broker)."""
    app = create_app(
        replace(
            settings,
            broker_url=f"filesystem://{tmp_path / 'broker'}",
            events_max_per_tenant=2,
            events_max_seconds=0.6,
            events_heartbeat_seconds=0.2,
        ),
        queue=RecordingQueue(),
    )
    yield app
    app.extensions["trainsvc.db"].dispose()


def test_each_tenant_may_hold_only_so_many_streams(capped: Flask) -> None:
    client = capped.test_client()
    job = submit(client, small_spec()).get_json()["id"]
    url = f"/v1/jobs/{job}/events"
    held = [client.get(url, headers=ALICE, buffered=False) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    refused = client.get(url, headers=ALICE)
    assert_error(refused, 429, "too_many_streams")
    assert refused.headers["Retry-After"] == "5"
    assert "EVENTS_MAX_PER_TENANT" in refused.get_json()["error"]["message"]
    bobs = submit(client, small_spec(), headers=BOB).get_json()["id"]
    other = client.get(f"/v1/jobs/{bobs}/events", headers=BOB, buffered=False)
    assert other.status_code == 200  # another tenant's cap is its own
    other.close()
    # A response closed before its body was read gives its slot back all the same.
    held.pop().close()
    again = client.get(url, headers=ALICE, buffered=False)
    assert again.status_code == 200
    for response in (*held, again):
        response.close()
    hub: Hub = capped.extensions["trainsvc.events"]
    assert not hub.open and not hub.watched


def test_a_stream_on_a_queued_job_ends_in_time_with_keepalives(capped: Flask) -> None:
    client = capped.test_client()
    job = submit(client, small_spec()).get_json()["id"]
    started = time.monotonic()
    body = client.get(f"/v1/jobs/{job}/events", headers=ALICE).get_data(as_text=True)
    took = time.monotonic() - started
    got = list(parse_events([body]))
    assert 0.6 <= took < 3, "EVENTS_MAX_SECONDS ends a stream even while its job waits"
    assert got[0].event == "status" and got[0].data["status"] == "queued"
    assert [e.event for e in got[1:]] and {e.event for e in got[1:]} == {"comment"}
    assert all(e.data == "keepalive" for e in got[1:])
    assert not capped.extensions["trainsvc.events"].open


def test_streams_follow_a_job_through_the_hub(capped: Flask) -> None:
    client = capped.test_client()
    database: Database = capped.extensions["trainsvc.db"]
    capped.config["EVENTS_MAX_SECONDS"] = 30
    job = submit(client, small_spec(epochs=3)).get_json()["id"]

    def watch() -> list[tuple[str, str | None]]:
        response = client.get(f"/v1/jobs/{job}/events", headers=ALICE)
        got = parse_events([response.get_data(as_text=True)])
        return [(e.event, e.id) for e in got if e.event != "comment"]

    with ThreadPoolExecutor(2) as pool:
        watching = [pool.submit(watch) for _ in range(2)]
        time.sleep(0.3)
        claim(database, job)
        add_epochs(database, job, 1, 2)
        time.sleep(0.3)
        add_epochs(database, job, 3)
        set_status(database, job, "succeeded")
        seen = [w.result(timeout=10) for w in watching]
    expected = [("status", None), ("status", None), ("epoch", "1"), ("epoch", "2")]
    expected += [("epoch", "3"), ("status", None)]
    assert seen == [expected, expected]


def test_a_stream_is_refused_while_the_database_cannot_be_read(capped: Flask) -> None:
    client = capped.test_client()
    job = submit(client, small_spec()).get_json()["id"]
    hub: Hub = capped.extensions["trainsvc.events"]
    readable, hub.db = hub.db, Database("postgresql://nobody@127.0.0.1:1/none")
    try:
        answer = client.get(f"/v1/jobs/{job}/events", headers=ALICE)
    finally:
        hub.db = readable
    assert_error(answer, 503, "unavailable")
    assert answer.headers["Retry-After"] == "5"
    assert not hub.watched and not hub.open


def test_the_in_process_cap_counts_releases_and_expires() -> None:
    cap = MemoryStreamCap(2, lease=0.2)
    first, second, third = cap.acquire(["a", "a", "a"])
    assert first and second and third is None
    assert cap.acquire(["b"])[0], "each tenant has its own slots"
    cap.release([("a", first)])
    assert cap.acquire(["a"])[0] and cap.acquire(["a"]) == [None]
    time.sleep(0.25)  # nobody renewed them: the leases ran out
    renewed = cap.acquire(["a", "a"])
    assert all(renewed)
    time.sleep(0.15)
    cap.renew([("a", t) for t in renewed if t])
    time.sleep(0.1)
    assert cap.acquire(["a"]) == [None], "renewed leases still hold their slots"
    assert NoStreamCap().acquire(["a"] * 1000) == [""] * 1000


@pytest.fixture
def redis_broker() -> str:
    url = redis_url()
    if url is None:
        pytest.skip("Redis is not answering on this machine")
    return url


def test_the_redis_cap_is_shared_by_processes_and_outlives_none(redis_broker: str) -> None:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    one = RedisStreamCap(redis_broker, 3, namespace, lease=0.5)
    two = RedisStreamCap(redis_broker, 3, namespace, lease=0.5)
    assert isinstance(make_stream_cap(redis_broker, 3, namespace), RedisStreamCap)
    mine = one.acquire(["alice", "alice"])
    theirs = two.acquire(["alice", "alice", "bob"])
    assert all(mine) and theirs[0] and theirs[1] is None and theirs[2]
    assert one.client.zcard(one.key("alice")) == 3, "a refused member is taken back out"
    two.release([("alice", theirs[0] or "")])
    dead = two.acquire(["alice"])  # then `two` dies: it never renews nor releases
    assert dead[0] and one.acquire(["alice"]) == [None]
    # A process that dies holds its slots one lease at most; one that lives renews them.
    for _ in range(3):
        time.sleep(0.25)
        one.renew([("alice", t or "") for t in mine])
    fresh = one.acquire(["alice"])
    assert fresh[0], "the dead process's slot has expired"
    assert one.acquire(["alice"]) == [None], "the renewed slots still count"
    one.client.delete(one.key("alice"), one.key("bob"))


def test_the_redis_cap_fails_open_when_redis_is_down() -> None:
    cap = RedisStreamCap("redis://127.0.0.1:1/0", 1, "down")
    assert cap.acquire(["alice", "alice"]) == ["", ""]
    cap.release([("alice", "x")])
    cap.renew([("alice", "x")])
