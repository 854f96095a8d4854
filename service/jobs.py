"""Job actions behind the views: create, read, list, cancel. Each takes a keyword-only session."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session
from sqlalchemy.sql.elements import ColumnElement

from core.cost import Cost, Limits, job_cost, over_limits
from core.db import Database, db_now, rowcount
from core.dispatch import Quotas, dispatch_once, measured_speed
from core.models import JOB_STATUSES, Job, JobCheckpoint, JobMetric
from core.queries import owned, page
from core.settings import Settings
from core.spec import JobSpec, to_stored
from service.errors import ApiError
from service.queue import JobQueue
from service.schemas import Epoch

log = logging.getLogger(__name__)

QUEUED_RETRY_AFTER = 10  # seconds: a tenant at its queued cap tries again after this


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


def admit(spec: JobSpec, *, session: Session, settings: Settings) -> Cost:
    """The job's cost, estimated with the workers' measured speed; 422 over a limit."""
    speed = measured_speed(session, spec.engine, settings.stale_after_seconds)
    cost = job_cost(spec, speed)
    limits = Limits(settings.max_job_flops, settings.max_data_bytes)
    problems = over_limits(cost, limits)
    if problems:
        details = [{"field": field, "message": message} for field, message in problems]
        raise ApiError(422, problems[0][1], code="over_limit", details=details)
    return cost


def check_queued_cap(session: Session, tenant_id: str, max_queued: int) -> None:
    """429 when the tenant already has `max_queued` jobs waiting (0: no cap)."""
    if not max_queued:
        return
    waiting = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant_id, Job.status == "queued")
    )
    if waiting is not None and waiting >= max_queued:
        raise ApiError(
            429,
            f"this tenant has {waiting:,} queued jobs, the most it may have waiting "
            f"(TENANT_MAX_QUEUED={max_queued:,}); wait for some to start, or cancel some",
            code="too_many_queued",
            headers={"Retry-After": str(QUEUED_RETRY_AFTER)},
        )


def create_job(
    spec: JobSpec,
    *,
    session: Session,
    tenant_id: str,
    cost: Cost | None = None,
    max_queued: int = 0,
    idempotency: tuple[str, str] | None = None,
) -> Job:
    """Record the job, queued and not yet sent; a dispatcher pass sends it when a slot is free.

    A job accepted with 202 is never lost: it is in the database before anything is sent, and
    every worker's dispatcher sends waiting jobs once the broker answers. With an idempotency
    (key, body fingerprint), a repeated request returns the job the first one created. Over
    `max_queued` waiting jobs of this tenant (0: no cap), 429.
    """
    if idempotency is not None:
        existing = find_idempotent(*idempotency, session=session, tenant_id=tenant_id)
        if existing is not None:
            return existing
    check_queued_cap(session, tenant_id, max_queued)
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
        enqueued_at=None,
        idempotency_key=idempotency[0] if idempotency else None,
        request_hash=idempotency[1] if idempotency else None,
        cost=cost.as_dict() if cost is not None else None,
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
    return job


def dispatch(db: Database, queue: JobQueue, settings: Settings) -> None:
    """One dispatcher pass from the API, so a job starts at once when a worker slot is free."""
    try:
        dispatch_once(
            db, queue.enqueue, Quotas(settings.tenant_max_running, settings.stale_after_seconds)
        )
    except Exception:  # the database or broker hiccuped: the workers' dispatchers send it
        log.exception("dispatcher pass after a submit failed")


def submit_job(
    spec: JobSpec,
    *,
    session: Session,
    tenant_id: str,
    db: Database,
    queue: JobQueue,
    settings: Settings,
    idempotency: tuple[str, str] | None = None,
) -> Job:
    """Admit the job by its cost and the tenant's quota, record it, and dispatch."""
    cost = admit(spec, session=session, settings=settings)
    job = create_job(
        spec,
        session=session,
        tenant_id=tenant_id,
        cost=cost,
        max_queued=settings.tenant_max_queued,
        idempotency=idempotency,
    )
    dispatch(db, queue, settings)
    session.refresh(job)
    return job


def get_job(job_id: str, *, session: Session, tenant_id: str) -> Job:
    """The tenant's job; `NotFound` (404) for a missing or foreign id."""
    return owned(session, Job, job_id, tenant_id)


def status_filter(column: Mapped[str], status: str | None) -> tuple[ColumnElement[bool], ...]:
    """The WHERE clause of a listing filtered by ?status= (none without one); 422 for a status
    that is not a job status (sweeps have the same ones)."""
    if status is None:
        return ()
    if status not in JOB_STATUSES:
        raise ApiError(
            422,
            f"unknown status {status!r}",
            details=[{"field": "status", "message": "one of " + ", ".join(JOB_STATUSES)}],
        )
    return (column == status,)


def list_jobs(
    *, session: Session, tenant_id: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is the id of the last job of the previous page."""
    where = status_filter(Job.status, status)
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
                    finished_at=db_now(),
                    error_code="cancelled",
                    error_message="cancelled on request before it started",
                )
            )
        )
        if done:  # a retried job waiting to resume: its checkpoint is of no use now
            session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job.id))
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
