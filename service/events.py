"""Server-Sent Events for one job: its status, each epoch as it is recorded, until it ends.

An open stream must cost almost nothing, since a browser tab or a `trainsvc wait` may keep one
open for hours. Two things make that so:

- The API runs under gunicorn's gevent workers (`service/gunicorn_conf.py`): a waiting stream is
  a parked greenlet (a few KiB), not one of a handful of request threads. psycopg (3.1.14 and
  later) and redis-py yield to other greenlets while they wait, so other requests go on.
- One `Hub` per API process reads, for every job its streams watch, the job rows in one query
  and their new epoch rows in one more (the full row, for the status event, only when a state
  changed or a stream joined), then wakes the streams whose job changed. 500 streams on any
  number of jobs cost two queries per `EVENTS_POLL_SECONDS`, not one polling loop per stream.

The database stays the source of truth (no other channel from the workers), a stream holds no
database connection while it waits, and an epoch or status is rendered once per process, not
once per stream. Each stream ends after `EVENTS_MAX_SECONDS` (the client resumes with
Last-Event-ID), sends `: keepalive` after `EVENTS_HEARTBEAT_SECONDS` of silence (so a dead
client is noticed and its slot freed), and holds one of its tenant's `EVENTS_MAX_PER_TENANT`
slots (`service/streamcap.py`). Without a hub (tests), a stream polls a feed of its own.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from flask import Response
from sqlalchemy import case, select
from sqlalchemy.orm import Session

from core.db import Database
from core.models import TERMINAL_STATUSES, Job, JobMetric
from service.errors import ApiError
from service.jsonutil import finite
from service.schemas import Epoch, JobOut
from service.streamcap import LEASE_SECONDS, RETRY_AFTER_SECONDS, StreamCap

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = ": keepalive\n\n"
# The hub polls at once when a stream joins, but never more often than this (a crowd of
# reconnecting clients costs a few extra rounds, not one each).
MIN_GAP_SECONDS = 0.05


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One event in the text/event-stream format (data is JSON on a single line)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    payload = json.dumps(finite(data), allow_nan=False, separators=(",", ":"))
    return f"{head}data: {payload}\n\n"


@dataclass(eq=False)
class Watched:
    """One job the streams of this process watch, as last read: its state and rendered events."""

    job_id: str
    tenant_id: str
    changed: threading.Condition
    watchers: int = 0
    version: int = 0  # raised whenever something below changes; streams wait for it to move
    fresh: bool = True  # a stream joined: re-read the full row so its first status is current
    gone: bool = False
    state: tuple[str, int] | None = None  # (status, attempts); None before the first read
    progress: int = 0  # the job row's progress_epoch when last read
    status: str = ""  # the status event of the latest state
    epochs: list[int] = field(default_factory=list)  # the current attempt's epochs, in order
    events: list[str] = field(default_factory=list)  # and their events


class Known(NamedTuple):
    """What a round starts from for one job (copied under the lock, read without it)."""

    tenant_id: str
    state: tuple[str, int] | None
    progress: int
    have: int  # the last epoch held
    fresh: bool


@dataclass
class Reading:
    """What one round learnt about a watched job (applied under the feed's lock)."""

    state: tuple[str, int]
    progress: int
    status: str | None = None
    epochs: list[tuple[int, str]] = field(default_factory=list)


class Feed:
    """The jobs watched in this process, read together: a round is two or three queries for all.

    A round reads the watched jobs' states (one query), the full rows of those whose state
    changed or that a new stream joined (rarely a second), and every new epoch row of the jobs
    that moved (one more), in one snapshot; then it wakes the streams of the jobs that changed.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.watched: dict[str, Watched] = {}

    def join(self, job_id: str, tenant_id: str) -> tuple[Watched, int]:
        """Start watching the job for one more stream: its entry, and the version to wait past."""
        with self.lock:
            entry = self.watched.get(job_id)
            if entry is None:
                entry = Watched(job_id, tenant_id, threading.Condition(self.lock))
                self.watched[job_id] = entry
            entry.watchers += 1
            entry.fresh = True
            return entry, entry.version

    def leave(self, entry: Watched) -> None:
        """One stream less; the last one out forgets the job."""
        with self.lock:
            entry.watchers -= 1
            if entry.watchers <= 0 and self.watched.get(entry.job_id) is entry:
                del self.watched[entry.job_id]

    def poll(self) -> None:
        """One round: read every watched job's changes, then wake their streams."""
        with self.lock:
            entries = list(self.watched.values())
            known = {
                e.job_id: Known(
                    e.tenant_id, e.state, e.progress, e.epochs[-1] if e.epochs else 0, e.fresh
                )
                for e in entries
            }
            for entry in entries:
                entry.fresh = False
        if not entries:
            return
        with self.db.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # One snapshot for the whole round: states and epoch rows agree.
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            readings = read_round(session, known)
        with self.lock:
            for entry in entries:
                apply(entry, readings.get(entry.job_id))


def read_round(session: Session, known: dict[str, Known]) -> dict[str, Reading]:
    """What changed in the known jobs since they were last read; a job left out is gone."""
    rows = session.execute(
        select(Job.id, Job.tenant_id, Job.status, Job.attempts, Job.progress_epoch).where(
            Job.id.in_(known)
        )
    ).all()
    readings: dict[str, Reading] = {}
    refresh: list[str] = []
    cursors: dict[str, int] = {}
    for row in rows:
        was = known[row.id]
        if row.tenant_id != was.tenant_id:
            continue  # another tenant's job is as absent as a deleted one
        state = (row.status, row.attempts)
        readings[row.id] = Reading(state, row.progress_epoch)
        if was.fresh or state != was.state:
            refresh.append(row.id)
        if was.state is None or state[1] != was.state[1]:
            cursors[row.id] = 0  # first read, or a new attempt: its history from the start
        elif row.progress_epoch != was.progress or state != was.state:
            cursors[row.id] = was.have  # the worker writes epochs and progress together
    if refresh:
        for job in session.scalars(select(Job).where(Job.id.in_(refresh))):
            readings[job.id].status = sse("status", JobOut.from_row(job).dump())
    if cursors:
        after = case(cursors, value=JobMetric.job_id, else_=0)
        metrics = session.scalars(
            select(JobMetric)
            .where(JobMetric.job_id.in_(cursors), JobMetric.epoch > after)
            .order_by(JobMetric.job_id, JobMetric.epoch)
        )
        for metric in metrics:
            epoch = Epoch.from_row(metric)
            readings[metric.job_id].epochs.append(
                (epoch.epoch, sse("epoch", epoch.dump(), epoch.epoch))
            )
    return readings


def apply(entry: Watched, reading: Reading | None) -> None:
    """Bring the entry up to date with a round's reading; wake its streams if anything changed."""
    if reading is None:
        changed = not entry.gone
        entry.gone = True
    else:
        if entry.state is not None and reading.state[1] != entry.state[1]:
            entry.epochs, entry.events = [], []
        entry.state, entry.progress = reading.state, reading.progress
        if reading.status is not None:
            entry.status = reading.status
        new = [(n, text) for n, text in reading.epochs if not entry.epochs or n > entry.epochs[-1]]
        entry.epochs.extend(n for n, _ in new)
        entry.events.extend(text for _, text in new)
        changed = reading.status is not None or bool(new)
    if changed:
        entry.version += 1
        entry.changed.notify_all()


class Hub(Feed):
    """The feed of one API process, polled by one background thread (a greenlet under gevent).

    The thread sleeps while nothing is watched, polls every `poll_seconds` while something is
    (and at once, within MIN_GAP_SECONDS, when a stream joins), and renews the stream slots of
    this process's open streams once per third of a lease.
    """

    def __init__(self, db: Database, cap: StreamCap, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__(db)
        self.cap = cap
        self.poll_seconds = poll_seconds
        self.slots: dict[object, tuple[str, str]] = {}  # stream: (tenant, token) held here
        self._wake = threading.Condition(self.lock)
        self._poked = False
        self._renewed = time.monotonic()
        self._pid: int | None = None

    def join(self, job_id: str, tenant_id: str) -> tuple[Watched, int]:
        """Watch the job and have the thread read it soon."""
        joined = super().join(job_id, tenant_id)
        with self.lock:
            self._poked = True
            self._wake.notify()
        self._ensure_thread()
        return joined

    def wait(self, entry: Watched, version: int, timeout: float) -> int:
        """Wait until the entry's version passes `version` (or `timeout`); the version now."""
        with self.lock:
            entry.changed.wait_for(lambda: entry.version != version, timeout=max(timeout, 0))
            return entry.version

    def hold(self, stream: object, tenant: str, token: str) -> None:
        """Renew this stream's slot while it stays open."""
        with self.lock:
            self.slots[stream] = (tenant, token)

    def drop(self, stream: object) -> None:
        """Stop renewing the stream's slot and give it back."""
        with self.lock:
            held = self.slots.pop(stream, None)
        if held is not None:
            self.cap.release(*held)

    def after_round(self) -> None:
        """Renew the slots of the streams open here, once per third of a lease."""
        if time.monotonic() - self._renewed < LEASE_SECONDS / 3:
            return
        with self.lock:
            held = list(self.slots.values())
        self.cap.renew(held)
        self._renewed = time.monotonic()

    def _ensure_thread(self) -> None:
        # Started on first use in each process (never at import, nor inherited across fork).
        with self.lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
        threading.Thread(target=self._run, name="trainsvc-events", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.watched:
                    self._wake.wait()
                self._wake.wait_for(lambda: self._poked, timeout=self.poll_seconds)
                self._poked = False
            try:
                self.poll()
                self.after_round()
            except Exception:
                log.exception("reading the watched jobs failed; trying again")
                time.sleep(self.poll_seconds)
            time.sleep(MIN_GAP_SECONDS)


class Cursor:
    """What one stream has sent: the last state and epoch; `take` gives what it has not."""

    def __init__(self, after: int) -> None:
        self.seen: tuple[str, int] | None = None
        self.last_epoch = after

    def take(self, entry: Watched) -> tuple[str, bool]:
        """The events to send now (maybe none) and whether the job has finished."""
        state = entry.state
        if state is None:
            return "", False
        if self.seen is not None and state[1] != self.seen[1]:
            self.last_epoch = 0
        start = bisect.bisect_right(entry.epochs, self.last_epoch)
        chunks = entry.events[start:]
        if chunks:
            self.last_epoch = entry.epochs[-1]
        finished = state[0] in TERMINAL_STATUSES
        if state != self.seen:
            # Status leads on the first read and on every start; a final status comes last.
            if self.seen is not None and finished:
                chunks.append(entry.status)
            else:
                chunks.insert(0, entry.status)
        self.seen = state
        return "".join(chunks), finished


def job_events(
    db: Database,
    job_id: str,
    tenant_id: str,
    *,
    after: int = 0,
    hub: Hub | None = None,
    slot: tuple[str, str] | None = None,
    poll_seconds: float = POLL_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield the job's events: status first, epochs after `after`, status on each change.

    Ends after the status event of a finished job (or after `max_seconds`, if given, so the
    client reconnects with Last-Event-ID). A retried job starts its history afresh, so a new
    attempt replays its epochs from the first. With a hub, the stream waits for its rounds and
    keeps `slot` (tenant, token) renewed while open; without one it polls a feed of its own.
    """
    feed = hub if hub is not None else Feed(db)
    entry, version = feed.join(job_id, tenant_id)
    stream = object()
    if hub is not None and slot is not None:
        hub.hold(stream, *slot)
    try:
        cursor = Cursor(after)
        started = last_sent = clock()
        first = True
        while True:
            if hub is not None:
                until = last_sent + keepalive_seconds
                if max_seconds is not None:
                    until = min(until, started + max_seconds)
                version = hub.wait(entry, version, until - clock())
            else:
                if not first:
                    sleep(poll_seconds)
                feed.poll()
            first = False
            if entry.gone:
                return
            with feed.lock:
                text, finished = cursor.take(entry)
            if text:
                yield text
                last_sent = clock()
            if finished:
                return
            now = clock()
            if max_seconds is not None and now - started >= max_seconds:
                return
            if now - last_sent >= keepalive_seconds:
                yield KEEPALIVE
                last_sent = now
    finally:
        feed.leave(entry)
        if hub is not None:
            hub.drop(stream)


def resume_after(after: str | None, last_event_id: str | None) -> int:
    """The last epoch the client has seen: `?after=N`, else the Last-Event-ID header, else 0."""
    for field_name, raw in (("after", after), ("Last-Event-ID", last_event_id)):
        if not raw:
            continue
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            raise ApiError(
                422,
                f"{field_name} must be an epoch number (a whole number, 0 or more)",
                details=[{"field": field_name, "message": raw[:100]}],
            )
        return int(raw)
    return 0


def stream_response(
    hub: Hub,
    job: Job,
    *,
    after: int,
    max_seconds: float | None,
    keepalive_seconds: float,
) -> Response:
    """The job's event stream, holding one of its tenant's slots; 429 when none is free."""
    token = hub.cap.acquire(job.tenant_id)
    if token is None:
        raise ApiError(
            429,
            "this tenant has as many event streams open as it may (EVENTS_MAX_PER_TENANT); "
            "close one or try again later",
            code="too_many_streams",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    events = job_events(
        hub.db,
        job.id,
        job.tenant_id,
        after=after,
        hub=hub,
        slot=(job.tenant_id, token),
        keepalive_seconds=keepalive_seconds,
        max_seconds=max_seconds,
    )
    response = event_stream(events)
    # Also when the body is never read: the generator's own clean-up runs only once started.
    response.call_on_close(lambda: hub.cap.release(job.tenant_id, token))
    return response


def event_stream(events: Iterator[str]) -> Response:
    """A streaming text/event-stream response that no proxy buffers or caches."""
    return Response(
        events,
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
