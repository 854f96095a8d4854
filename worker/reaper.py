"""The reaper: put jobs whose worker died back in the queue, and re-send lost messages.

The database is the source of truth. A running job whose heartbeat stopped has lost its worker
(killed, out of memory, machine gone): it is queued again, or failed once it has used up its
attempts. A queued job whose message was sent long ago may have lost it (a broker restart):
its id is sent again. Queued jobs never sent are the dispatcher's (core/dispatch.py).
Duplicate messages are harmless, since only one worker can claim a queued job. Every change is
a conditional UPDATE, so several reapers may run at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, select, update

from core.db import Database, aware, read_db_now, rowcount
from core.models import TERMINAL_STATUSES, Job, JobCheckpoint
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)


def ended(status: str, code: str, message: str, at: datetime) -> dict[str, Any]:
    """The column values that end a job with its reason."""
    return {"status": status, "error_code": code, "error_message": message, "finished_at": at}


def reap_once(db: Database, enqueue: Callable[[str], None], settings: Settings) -> ReapReport:
    """One pass over stale running jobs and long-queued jobs, by the database server's clock."""
    report = ReapReport()
    with db.begin() as session:
        now = read_db_now(session)
        stale_before = now - timedelta(seconds=settings.stale_after_seconds)
        stale = session.execute(
            select(
                Job.id,
                Job.attempts,
                Job.heartbeat_at,
                Job.started_at,
                Job.cancel_requested,
                Job.worker,
            )
            .where(Job.status == "running", Job.heartbeat_at < stale_before)
            .limit(100)
        ).all()
    for job_id, attempts, heartbeat, started, cancel, host in stale:
        fence = (
            Job.id == job_id,
            Job.status == "running",
            Job.attempts == attempts,
            Job.heartbeat_at == heartbeat,
        )
        ran = (heartbeat - started).total_seconds() if heartbeat and started else 0.0
        values: dict[str, Any]
        if cancel:
            message = "cancelled on request; its worker had stopped"
            values = ended("cancelled", "cancelled", message, now)
        elif ran >= settings.job_time_limit:
            values = ended(
                "failed", "timeout", "the job ran past its hard time limit and was stopped", now
            )
        elif attempts >= settings.max_attempts:
            silent = (now - aware(heartbeat)).total_seconds() if heartbeat else 0.0
            values = ended(
                "failed",
                "worker_lost",
                f"no heartbeat for {silent:.0f} s from {host or 'its worker'} during attempt "
                f"{attempts} of MAX_ATTEMPTS={settings.max_attempts} (stale after "
                f"{settings.stale_after_seconds:g} s): the host stopped, or lost its way to the "
                "database",
                now,
            )
        else:
            values = {"status": "queued", "enqueued_at": now}
        with db.begin() as session:
            changed = rowcount(session.execute(update(Job).where(*fence).values(**values)))
            if changed and values["status"] in TERMINAL_STATUSES:
                session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
        if not changed:
            continue
        if values["status"] == "queued":
            report.requeued.append(job_id)
            log.warning(
                "job %s: worker lost during attempt %d; queued again",
                job_id,
                attempts,
                extra={"job_id": job_id},
            )
            _send(enqueue, job_id)
        else:
            report.failed.append(job_id)
            log.warning("job %s: %s", job_id, values["error_message"], extra={"job_id": job_id})

    resend_before = now - timedelta(seconds=settings.requeue_after_seconds)
    with db.begin() as session:
        waiting = session.execute(
            select(Job.id, Job.enqueued_at)
            .where(Job.status == "queued", Job.enqueued_at < resend_before)
            .order_by(Job.id)
            .limit(500)
        ).all()
    for job_id, enqueued in waiting:
        fence_sent = Job.enqueued_at == enqueued
        with db.begin() as session:
            changed = rowcount(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == "queued", fence_sent)
                    .values(enqueued_at=now)
                )
            )
        if not changed:
            continue
        if _send(enqueue, job_id):
            report.resent.append(job_id)
        else:  # not sent after all: back to the dispatcher, which sends it once the broker is up
            with db.begin() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == "queued", Job.enqueued_at == now)
                    .values(enqueued_at=None)
                )
    if report.resent:
        log.info("re-sent %d queued job(s) to the broker", len(report.resent))
    with db.begin() as session:  # a checkpoint whose job ended by another path
        over = exists().where(Job.id == JobCheckpoint.job_id, Job.status.in_(TERMINAL_STATUSES))
        session.execute(delete(JobCheckpoint).where(over))
    return report


def _send(enqueue: Callable[[str], None], job_id: str) -> bool:
    try:
        enqueue(job_id)
        return True
    except Exception as exc:  # the broker is down: the next pass tries again
        log.warning(
            "job %s: could not send to the broker (%s)", job_id, exc, extra={"job_id": job_id}
        )
        return False
