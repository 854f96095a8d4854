"""The jobs an API process's event streams watch, read together in rounds and fanned out.

A round reads every watched job's state (one query), the full rows of those whose state changed
or that a stream just joined (a second, only then), and every new epoch row of the jobs that
moved (one more), all in one snapshot; each event is rendered once, and only the streams whose
job changed are woken. The same round admits the streams that asked to open since the last one
(their job's existence comes with the first query; their slots with one Redis transaction) and
gives back the slots of those that ended. See `service/events.py` for why.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from core.db import Database
from core.models import Job, JobMetric
from service.schemas import Epoch, JobOut
from service.sse import sse
from service.streamcap import LEASE_SECONDS, StreamCap

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
# The hub reads at once when a stream asks to open, but never more often than this: a crowd of
# reconnecting clients costs a few more rounds, not a query each.
MIN_GAP_SECONDS = 0.05
# How long a stream waits to be admitted before it is answered 503.
ADMIT_SECONDS = 10.0

Key = tuple[str, str]  # (job id, tenant id): a tenant only ever watches its own jobs


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
    """The jobs watched in this process; `poll` reads them all in one round."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.watched: dict[Key, Watched] = {}

    def join(self, job_id: str, tenant_id: str) -> tuple[Watched, int]:
        """Start watching the job for one more stream: its entry, and the version to wait past."""
        with self.lock:
            entry = self.watched.get((job_id, tenant_id))
            if entry is None:
                entry = Watched(job_id, tenant_id, threading.Condition(self.lock))
                self.watched[job_id, tenant_id] = entry
            entry.watchers += 1
            entry.fresh = True
            return entry, entry.version

    def leave(self, entry: Watched) -> None:
        """One stream less; the last one out forgets the job."""
        with self.lock:
            self._leave(entry)

    def _leave(self, entry: Watched) -> None:
        entry.watchers -= 1
        key = (entry.job_id, entry.tenant_id)
        if entry.watchers <= 0 and self.watched.get(key) is entry:
            del self.watched[key]

    def poll(self) -> None:
        """One round: read every watched job's changes, then wake their streams."""
        with self.lock:
            entries = list(self.watched.items())
            known = {
                key: Known(e.state, e.progress, e.epochs[-1] if e.epochs else 0, e.fresh)
                for key, e in entries
            }
            for _, entry in entries:
                entry.fresh = False
        if not entries:
            return
        with self.db.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # One snapshot for the whole round: states and epoch rows agree.
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            readings = read_round(session, known)
        with self.lock:
            for key, entry in entries:
                apply(entry, readings.get(key))


def read_round(session: Session, known: dict[Key, Known]) -> dict[Key, Reading]:
    """What changed in the known jobs since they were last read; a job left out is gone."""
    rows = session.execute(
        select(Job.id, Job.tenant_id, Job.status, Job.attempts, Job.progress_epoch).where(
            Job.id.in_({job_id for job_id, _ in known})
        )
    ).all()
    readings: dict[Key, Reading] = {}
    refresh: list[str] = []
    cursors: dict[str, int] = {}
    for row in rows:
        was = known.get((row.id, row.tenant_id))
        if was is None:
            continue  # watched by another tenant only: as absent to it as a deleted job
        state = (row.status, row.attempts)
        readings[row.id, row.tenant_id] = Reading(state, row.progress_epoch)
        if was.fresh or state != was.state:
            refresh.append(row.id)
        if was.state is None or state[1] != was.state[1]:
            cursors[row.id] = 0  # first read, or a new attempt: its history from the start
        elif row.progress_epoch != was.progress or state != was.state:
            cursors[row.id] = was.have  # the worker writes epochs and progress together
    if refresh:
        for job in session.scalars(select(Job).where(Job.id.in_(refresh))):
            readings[job.id, job.tenant_id].status = sse("status", JobOut.from_row(job).dump())
    if cursors:
        after = case(cursors, value=JobMetric.job_id, else_=0)
        owners = {job_id: tenant_id for job_id, tenant_id in readings}
        metrics = session.scalars(
            select(JobMetric)
            .where(JobMetric.job_id.in_(cursors), JobMetric.epoch > after)
            .order_by(JobMetric.job_id, JobMetric.epoch)
        )
        for metric in metrics:
            epoch = Epoch.from_row(metric)
            readings[metric.job_id, owners[metric.job_id]].epochs.append(
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


@dataclass(eq=False)
class Ticket:
    """One stream of the hub's: its job's entry, the version to wait past, its slot once open."""

    entry: Watched
    version: int
    answer: str = ""  # once decided: "open", "gone", "full" or "unavailable"
    token: str | None = None
    closed: bool = False


class Hub(Feed):
    """The feed of one API process, run by one background thread (a greenlet under gevent).

    The thread sleeps while there is nothing to do; it runs a round every `poll_seconds` while
    something is watched, and within MIN_GAP_SECONDS when a stream asks to open. Each round also
    gives back the slots of the streams that ended and, once per third of a lease, renews those
    of the streams still open.
    """

    def __init__(self, db: Database, cap: StreamCap, poll_seconds: float = POLL_SECONDS) -> None:
        super().__init__(db)
        self.cap = cap
        self.poll_seconds = poll_seconds
        self.open: set[Ticket] = set()
        self._admitting: list[Ticket] = []
        self._releasing: list[tuple[str, str]] = []
        self._wake = threading.Condition(self.lock)
        self._decided = threading.Condition(self.lock)
        self._poked = False
        self._renewed = time.monotonic()
        self._pid: int | None = None

    def admit(self, job_id: str, tenant_id: str, timeout: float = ADMIT_SECONDS) -> Ticket:
        """Ask to stream the tenant's job; the next round answers (see `Ticket.answer`)."""
        self._ensure_thread()
        entry, version = self.join(job_id, tenant_id)
        ticket = Ticket(entry, version)
        with self.lock:
            self._admitting.append(ticket)
            self._poked = True
            self._wake.notify()
            if not self._decided.wait_for(lambda: ticket.answer, timeout=timeout):
                ticket.answer = "unavailable"
        if ticket.answer != "open":
            self.close(ticket)
        return ticket

    def wait(self, entry: Watched, version: int, timeout: float) -> int:
        """Wait until the entry's version passes `version` (or `timeout`); the version now."""
        with self.lock:
            entry.changed.wait_for(lambda: entry.version != version, timeout=max(timeout, 0))
            return entry.version

    def close(self, ticket: Ticket) -> None:
        """The stream has ended (or never started): leave its job, give its slot back soon."""
        with self.lock:
            if ticket.closed:
                return
            ticket.closed = True
            self._leave(ticket.entry)
            self.open.discard(ticket)
            if ticket.token is not None:
                self._releasing.append((ticket.entry.tenant_id, ticket.token))
                self._wake.notify()

    def round(self) -> None:
        """Give back ended streams' slots, read the watched jobs, answer who asked to open."""
        with self.lock:
            admitting, self._admitting = self._admitting, []
            releasing, self._releasing = self._releasing, []
        if releasing:
            self.cap.release(releasing)
        try:
            self.poll()
        except Exception:
            self._answer([(ticket, None) for ticket in admitting], unavailable=True)
            raise
        gone = [ticket for ticket in admitting if ticket.entry.gone]
        live = [ticket for ticket in admitting if not ticket.entry.gone]
        tokens = self.cap.acquire([ticket.entry.tenant_id for ticket in live])
        self._answer([(ticket, None) for ticket in gone] + list(zip(live, tokens, strict=True)))
        self._renew()

    def _answer(self, decided: list[tuple[Ticket, str | None]], unavailable: bool = False) -> None:
        with self.lock:
            for ticket, token in decided:
                if ticket.answer:  # it stopped waiting meanwhile: the slot goes straight back
                    if token:
                        self._releasing.append((ticket.entry.tenant_id, token))
                    continue
                if unavailable:
                    ticket.answer = "unavailable"
                elif ticket.entry.gone:
                    ticket.answer = "gone"
                else:
                    ticket.token = token
                    ticket.answer = "open" if token is not None else "full"
                    if token is not None:
                        self.open.add(ticket)
            self._decided.notify_all()

    def _renew(self) -> None:
        if time.monotonic() - self._renewed < LEASE_SECONDS / 3:
            return
        with self.lock:
            held = [(t.entry.tenant_id, t.token) for t in self.open if t.token]
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
                self._wake.wait_for(lambda: self.watched or self._admitting or self._releasing)
                self._wake.wait_for(lambda: self._poked, timeout=self.poll_seconds)
                self._poked = False
            try:
                self.round()
            except Exception:
                log.exception("reading the watched jobs failed; trying again")
                time.sleep(self.poll_seconds)
            time.sleep(MIN_GAP_SECONDS)
