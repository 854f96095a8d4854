"""Job actions behind the views: create, read, list, cancel. Each takes a keyword-only session."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import rowcount
from core.models import JOB_STATUSES, Job, JobMetric, utcnow
from core.queries import owned, page
from core.spec import JobSpec, to_stored
from service.errors import ApiError
from service.queue import BrokerUnavailable, JobQueue
from service.schemas import Epoch

log = logging.getLogger(__name__)


def request_hash(payload: Any) -> str:
    """A fingerprint of a JSON body, independent of key order and spacing."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_idempotent(key: str, fingerprint: str, *, session: Session, tenant_id: str) -> Job | None:
    """The job an earlier request with this Idempotency-Key created; 422 if the body differs."""
    job = session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))
    if job is not None and job.request_hash != fingerprint:
        raise ApiError(
            422,
            "this Idempotency-Key was used with a different request body",
            code="idempotency_key_reused",
            details=[{"field": "Idempotency-Key", "message": f"already used by job {job.id}"}],
        )
    return job


def create_job(
    spec: JobSpec,
    *,
    session: Session,
    tenant_id: str,
    queue: JobQueue,
    idempotency: tuple[str, str] | None = None,
) -> Job:
    """Record the job, commit, then send its id to the broker.

    If the broker is down the job stays recorded as queued, and the workers' reaper sends it
    once the broker answers again: a job accepted with 202 is never lost. With an idempotency
    (key, body fingerprint), a repeated request returns the job the first one created.
    """
    if idempotency is not None:
        existing = find_idempotent(*idempotency, session=session, tenant_id=tenant_id)
        if existing is not None:
            return existing
    job = Job(
        tenant_id=tenant_id,
        name=spec.name,
        engine=spec.engine,
        status="queued",
        spec=to_stored(spec),
        progress_epochs=spec.epochs,
        attempts=0,
        progress_epoch=0,
        cancel_requested=False,
        enqueued_at=utcnow(),
        idempotency_key=idempotency[0] if idempotency else None,
        request_hash=idempotency[1] if idempotency else None,
    )
    session.add(job)
    try:
        session.commit()  # the row must exist before any worker can receive its id
    except IntegrityError:
        session.rollback()  # a concurrent request with the same key won the race
        assert idempotency is not None
        winner = find_idempotent(*idempotency, session=session, tenant_id=tenant_id)
        if winner is None:
            raise
        return winner
    try:
        queue.enqueue(job.id)
    except BrokerUnavailable as exc:
        log.warning("job %s recorded but not sent (%s); the reaper will send it", job.id, exc)
        session.execute(update(Job).where(Job.id == job.id).values(enqueued_at=None))
        session.commit()
        session.refresh(job)
    return job


def get_job(job_id: str, *, session: Session, tenant_id: str) -> Job:
    """The tenant's job; `NotFound` (404) for a missing or foreign id."""
    return owned(session, Job, job_id, tenant_id)


def list_jobs(
    *, session: Session, tenant_id: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is the id of the last job of the previous page."""
    if status is not None and status not in JOB_STATUSES:
        raise ApiError(
            422,
            f"unknown status {status!r}",
            details=[{"field": "status", "message": "one of " + ", ".join(JOB_STATUSES)}],
        )
    where = () if status is None else (Job.status == status,)
    return page(session, Job, tenant_id, *where, limit=limit, cursor=cursor)


def job_history(job: Job, *, session: Session, after: int = 0) -> list[Epoch]:
    """The job's recorded epochs (those after epoch `after`), in order."""
    rows = session.scalars(
        select(JobMetric)
        .where(JobMetric.job_id == job.id, JobMetric.epoch > after)
        .order_by(JobMetric.epoch)
    )
    return [Epoch.from_row(row) for row in rows]


def cancel_job(job_id: str, *, session: Session, tenant_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop after its current epoch."""
    job = get_job(job_id, session=session, tenant_id=tenant_id)
    if job.status == "queued":
        done = rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == "queued")
                .values(
                    status="cancelled",
                    cancel_requested=True,
                    finished_at=utcnow(),
                    error_code="cancelled",
                    error_message="cancelled on request before it started",
                )
            )
        )
        session.commit()
        session.refresh(job)
        if done:
            return job
    if job.status == "running":
        # The worker sees the flag at its next epoch boundary and ends the job `cancelled`;
        # if it is finishing right now, it ends `cancelled` too rather than `succeeded`.
        done = rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == "running")
                .values(cancel_requested=True)
            )
        )
        session.commit()
        session.refresh(job)
        if done:
            return job
    raise ApiError(
        409, f"the job is already {job.status}; only a queued or running job can be cancelled"
    )
