"""Server-Sent Events for one sweep: its state, each trial's start and end, and every epoch.

A sweep stream is rarer than a job stream (a dashboard page, a `trainsvc sweep submit --wait`),
so it reads its sweep's trials itself, every EVENTS_POLL_SECONDS: the sweep row, then its
trials, then the epoch rows it has not sent of the trials not yet drained (see SweepFeed). It holds
one of its tenant's EVENTS_MAX_PER_TENANT slots through the hub's stream cap (renewed as the
hub's own streams are), and renders events with the same `sse` helper as job streams:

- `event: sweep` — the sweep without its leaderboard, first and whenever its state, progress or
  best trial changes; the last event once the sweep has finished;
- `event: trial` — `{job_id, trial, status, params, epochs, objective, error}` when a trial is
  created, starts (running) and ends;
- `event: epoch` — `{job_id, trial, epoch, loss, accuracy, val_loss, val_accuracy, seconds}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response
from sqlalchemy import case, select

from core.db import Database
from core.models import TERMINAL_STATUSES, Job, JobMetric, Sweep
from core.queries import NotFound, find
from core.sweeps import summarize
from service.events import event_stream, stream_refused
from service.hub import Hub
from service.schemas import Epoch, JobError, SweepOut
from service.sse import KEEPALIVE, sse


class SweepFeed:
    """What one stream has sent of its sweep, and the round that reads what it has not.

    Each round reads in the reverse of the order the worker writes: the sweep row, then its
    trials, then their new epoch rows. A worker commits a trial's epoch rows before (or with)
    the trial's end, and the controller ends a sweep after its trials, so whatever a round reads
    as finished has all its epochs in the rows read after it; rows committed meanwhile are only
    newer ones. The stream remembers the last epoch it sent of each trial (not the trial row's
    progress_epoch, which may be older than the rows read after it), so no epoch goes twice, and
    it sends the sweep's terminal event only in the round that has seen every trial finished and
    drained: it is always the last event.
    """

    def __init__(self, db: Database, sweep_id: str) -> None:
        self.db, self.sweep_id = db, sweep_id
        self.trials: dict[str, tuple[str, int]] = {}  # job id: (status, attempts) last read
        self.sent: dict[str, int] = {}  # job id: the last epoch sent of its current attempt
        self.drained: set[str] = set()  # finished trials whose every epoch has been sent
        self.sweep_state: Any = None
        self.finished = False

    def round(self) -> str:
        """The events since the last round (maybe none)."""
        with self.db.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # One snapshot, as the hub's rounds: the sweep event's progress agrees with the
                # trial events (the order of the reads alone keeps the epochs right).
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            sweep = session.get(Sweep, self.sweep_id)
            if sweep is None:
                self.finished = True
                return ""
            jobs = list(session.scalars(select(Job).where(Job.sweep_id == self.sweep_id)))
            changed: list[Job] = []
            for job in jobs:
                was = self.trials.get(job.id)
                if was is None or (job.status, job.attempts) != was:
                    changed.append(job)
                if was is not None and job.attempts != was[1]:
                    self.sent[job.id] = 0  # a retried trial replays its epochs
                    self.drained.discard(job.id)
                self.trials[job.id] = (job.status, job.attempts)
            numbers = {job.id: job.trial for job in jobs}
            cursors = {
                job.id: self.sent.get(job.id, 0)
                for job in jobs
                if job.id not in self.drained and job.status != "queued"
            }
            epochs: list[str] = []
            if cursors:
                after = case(cursors, value=JobMetric.job_id, else_=0)
                for metric in session.scalars(
                    select(JobMetric)
                    .where(JobMetric.job_id.in_(cursors), JobMetric.epoch > after)
                    .order_by(JobMetric.job_id, JobMetric.epoch)
                ):
                    body = {"job_id": metric.job_id, "trial": numbers[metric.job_id]}
                    body.update(Epoch.from_row(metric).dump())
                    epochs.append(sse("epoch", body))
                    self.sent[metric.job_id] = metric.epoch
            for job in jobs:
                if job.id in cursors and job.status in TERMINAL_STATUSES:
                    self.drained.add(job.id)  # read finished before its rows: all are sent
            starts: list[str] = []
            ends: list[str] = []
            for job in sorted(changed, key=lambda j: j.trial or 0):
                pending = job.status in ("queued", "running")
                (starts if pending else ends).append(sse("trial", trial_event(job)))
            chunks = starts + epochs + ends
            trials_done = all(job.status in TERMINAL_STATUSES for job in jobs)
            self.finished = sweep.status in TERMINAL_STATUSES and trials_done
            if sweep.status in TERMINAL_STATUSES and not trials_done:
                return "".join(chunks)  # its end waits for its trials' last epochs
            out = SweepOut.from_row(sweep, summarize(session, sweep), board=False).dump()
            state = (out["status"], out["progress"], out["best"])
            if state != self.sweep_state or self.finished:
                self.sweep_state = state
                chunks.append(sse("sweep", out))
        return "".join(chunks)


def trial_event(job: Job) -> dict[str, Any]:
    """A trial's start or end as the stream tells it."""
    error = JobError.of(job)
    return {
        "job_id": job.id,
        "trial": job.trial,
        "status": job.status,
        "params": job.params or {},
        "epochs": job.progress_epoch,
        "metrics": job.metrics or {},
        "error": None if error is None else error.dump(),
    }


def sweep_events(
    feed: SweepFeed,
    *,
    poll_seconds: float,
    keepalive_seconds: float,
    max_seconds: float | None,
    renew: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield the sweep's events until it and all its trials have finished (or `max_seconds`)."""
    started = last_sent = renewed = clock()
    while True:
        text = feed.round()
        if text:
            yield text
            last_sent = clock()
        if feed.finished:
            return
        now = clock()
        if max_seconds is not None and now - started >= max_seconds:
            return
        if now - last_sent >= keepalive_seconds:
            yield KEEPALIVE
            last_sent = now
        if now - renewed >= 20:
            renew()
            renewed = now
        sleep(poll_seconds)


def stream_response(
    hub: Hub,
    sweep_id: str,
    tenant_id: str,
    *,
    max_seconds: float | None,
    keepalive_seconds: float,
) -> Response:
    """The tenant's sweep's event stream; 404, or 429 when the tenant's slots are all in use."""
    with hub.db.session() as session:
        if find(session, Sweep, sweep_id, tenant_id, columns=(Sweep.id,)) is None:
            raise NotFound.of(Sweep, sweep_id)
    token = hub.cap.acquire([tenant_id])[0]
    if token is None:
        raise stream_refused(full=True)
    held = [(tenant_id, token)]
    events = sweep_events(
        SweepFeed(hub.db, sweep_id),
        poll_seconds=hub.poll_seconds,
        keepalive_seconds=keepalive_seconds,
        max_seconds=max_seconds,
        renew=lambda: hub.cap.renew(held),
    )
    response = event_stream(events)
    response.call_on_close(lambda: hub.cap.release(held))
    return response
