"""Job actions behind the views: create, read, list, cancel. Each takes a keyword-only session."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import rowcount
from core.models import JOB_STATUSES, Job, JobMetric, utcnow
from core.spec import JobSpec, to_stored
from service.errors import ApiError
from service.queue import BrokerUnavailable, JobQueue

log = logging.getLogger(__name__)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they are stored in UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "engine": job.engine,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "progress": {"epoch": job.progress_epoch, "epochs": job.progress_epochs},
        "metrics": job.metrics or {},
        "error": (
            {"code": job.error_code, "message": job.error_message} if job.error_code else None
        ),
        "model_id": job.model_id,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "training": job.info,
        "spec": job.spec,
    }


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
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
    if job is None:
        raise ApiError(404, f"no job with id {job_id!r}")
    return job


def list_jobs(
    *, session: Session, tenant_id: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is the id of the last job of the previous page."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        if status not in JOB_STATUSES:
            raise ApiError(
                422,
                f"unknown status {status!r}",
                details=[{"field": "status", "message": "one of " + ", ".join(JOB_STATUSES)}],
            )
        query = query.where(Job.status == status)
    if cursor:
        query = query.where(Job.id < cursor)
    jobs = list(session.scalars(query.order_by(Job.id.desc()).limit(limit + 1)))
    next_cursor = jobs[limit - 1].id if len(jobs) > limit else None
    return jobs[:limit], next_cursor


def job_history(job: Job, *, session: Session, after: int = 0) -> list[dict[str, Any]]:
    """The job's recorded epochs (those after epoch `after`), in order."""
    rows = session.scalars(
        select(JobMetric)
        .where(JobMetric.job_id == job.id, JobMetric.epoch > after)
        .order_by(JobMetric.epoch)
    )
    history = []
    for row in rows:
        entry: dict[str, Any] = {"epoch": row.epoch, "loss": row.loss}
        for name in ("accuracy", "val_loss", "val_accuracy"):
            value = getattr(row, name)
            if value is not None:
                entry[name] = value
        entry["seconds"] = row.seconds
        history.append(entry)
    return history


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
