"""Fair dispatch: the database decides which queued jobs go to the broker, and when.

A job is recorded `queued` with `enqueued_at` NULL (not sent). A dispatcher pass sends as many as
the workers have free pool slots (the `workers` table; every slot holds one running or sent job),
fairly: a tenant's n-th waiting job ranks after every other tenant's jobs with fewer jobs in
flight, so one tenant's thousand queued jobs cannot hold back another's one; within a tenant,
oldest first; never more than TENANT_MAX_RUNNING in flight for one tenant. A job is marked sent
only once the broker took its message. Passes run on every worker's timer, when a job ends, and
in the API after each submit; any number may run at once (rows are locked with SKIP LOCKED on
PostgreSQL; on SQLite a duplicate message can slip through, which the conditional claim makes
harmless). With no worker registered yet, jobs are sent as they come, up to `UNREGISTERED_BATCH`
a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from core.db import Database, aware, db_now, rowcount
from core.models import Job, Worker
from core.settings import Settings

log = logging.getLogger(__name__)

UNREGISTERED_BATCH = 100


@dataclass(frozen=True)
class Quotas:
    tenant_max_running: int  # jobs in flight (sent or running) per tenant; 0: no cap
    worker_seen_within: float  # seconds: a worker silent for longer has no slots

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        return cls(settings.tenant_max_running, settings.stale_after_seconds)


def live_workers(session: Session, within: float) -> list[Worker]:
    """The workers that refreshed their row in the last `within` seconds (database clock)."""
    return list(session.scalars(select(Worker).where(Worker.seen_at >= db_now(-within))))


def in_flight(session: Session) -> dict[str, int]:
    """Per tenant, the jobs sent to the broker or running."""
    rows = session.execute(
        select(Job.tenant_id, func.count())
        .where(
            or_(
                Job.status == "running",
                and_(Job.status == "queued", Job.enqueued_at.is_not(None)),
            )
        )
        .group_by(Job.tenant_id)
    ).all()
    return {tenant: int(count) for tenant, count in rows}


def last_served(session: Session, tenants: set[str]) -> dict[str, datetime]:
    """When each tenant last had a job sent (tenants never served are absent)."""
    rows = session.execute(
        select(Job.tenant_id, func.max(Job.enqueued_at))
        .where(Job.tenant_id.in_(tenants), Job.enqueued_at.is_not(None))
        .group_by(Job.tenant_id)
    ).all()
    return {tenant: at for tenant, at in rows if at is not None}


def choose(
    waiting: list[tuple[str, str, int]],
    flying: dict[str, int],
    free: int,
    max_running: int,
    served: dict[str, datetime] | None = None,
) -> list[str]:
    """Pick up to `free` of the (job id, tenant, rank within tenant) waiting, fairly.

    A tenant's n-th waiting job ranks at n plus its jobs in flight; ties go to the tenant served
    least recently (never served first), then to the oldest job: round-robin between tenants.
    """
    busy = dict(flying)
    served = served or {}
    never = datetime.min.replace(tzinfo=UTC)

    def order(w: tuple[str, str, int]) -> tuple[int, datetime, str]:
        job_id, tenant, rank = w
        return (flying.get(tenant, 0) + rank, aware(served.get(tenant, never)), job_id)

    chosen: list[str] = []
    for job_id, tenant, _ in sorted(waiting, key=order):
        if len(chosen) >= free:
            break
        if max_running and busy.get(tenant, 0) >= max_running:
            continue
        chosen.append(job_id)
        busy[tenant] = busy.get(tenant, 0) + 1
    return chosen


def dispatch_once(db: Database, send: Callable[[str], None], quotas: Quotas) -> list[str]:
    """One pass: send the jobs that fit in the free slots; returns the ids sent."""
    with db.session() as session:
        workers = live_workers(session, quotas.worker_seen_within)
        flying = in_flight(session)
        if workers:
            free = sum(w.concurrency for w in workers) - sum(flying.values())
        else:
            free = UNREGISTERED_BATCH
        if free <= 0:
            return []
        rank = func.row_number().over(partition_by=Job.tenant_id, order_by=Job.id).label("rank")
        unsent = (
            select(Job.id, Job.tenant_id, rank)
            .where(Job.status == "queued", Job.enqueued_at.is_(None))
            .subquery()
        )
        waiting = [
            (job_id, tenant, int(r))
            for job_id, tenant, r in session.execute(
                select(unsent.c.id, unsent.c.tenant_id, unsent.c.rank).where(unsent.c.rank <= free)
            )
        ]
        served = last_served(session, {tenant for _, tenant, _ in waiting})
    chosen = choose(waiting, flying, free, quotas.tenant_max_running, served)
    if not chosen:
        return []
    sent: list[str] = []
    with db.begin() as session:
        still = set(
            session.scalars(
                select(Job.id)
                .where(Job.id.in_(chosen), Job.status == "queued", Job.enqueued_at.is_(None))
                .with_for_update(skip_locked=True)
            )
        )
        for job_id in (j for j in chosen if j in still):
            try:
                send(job_id)
            except Exception as exc:  # the broker is down: the next pass tries again
                log.warning("could not send job %s to the broker (%s)", job_id, exc)
                break
            marked = (
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .execution_options(synchronize_session=False)
            )
            if rowcount(session.execute(marked.values(enqueued_at=db_now()))):
                sent.append(job_id)
    if sent:
        log.info("dispatched %d job(s)", len(sent))
    return sent


def register_worker(db: Database, name: str, concurrency: int) -> None:
    """Create or refresh this worker's row (its pool size; seen now, by the database's clock)."""
    now = db_now()
    with db.begin() as session:
        refreshed = rowcount(
            session.execute(
                update(Worker)
                .where(Worker.name == name)
                .values(concurrency=concurrency, seen_at=now)
            )
        )
        if not refreshed:
            session.add(Worker(name=name, concurrency=concurrency, started_at=now, seen_at=now))


def forget_worker(db: Database, name: str) -> None:
    """This worker is stopping: its slots no longer count (its measured speed stays)."""
    with db.begin() as session:
        session.execute(update(Worker).where(Worker.name == name).values(concurrency=0))


def record_speed(db: Database, name: str, engine: str, flops_per_second: float) -> None:
    """Fold one job's measured training speed into the worker's moving average."""
    column = Worker.numpy_flops if engine == "numpy" else Worker.keras_flops
    averaged = func.coalesce(0.7 * column + 0.3 * flops_per_second, flops_per_second)
    with db.begin() as session:
        session.execute(update(Worker).where(Worker.name == name).values({column: averaged}))


def measured_speed(session: Session, engine: str, within: float) -> float | None:
    """The median training speed (FLOP/s) the live workers measured for `engine`."""
    column = "numpy_flops" if engine == "numpy" else "keras_flops"
    speeds = sorted(
        value
        for worker in live_workers(session, within)
        if (value := getattr(worker, column)) is not None
    )
    return speeds[len(speeds) // 2] if speeds else None
