"""Sweep actions behind the views: plan, admit, create, read, list, cancel.

The API records the sweep; the controllers on the workers (`worker/sweeps.py`) create its
trials as jobs, at most `max_parallel` unfinished at a time, and end it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.cost import Cost, Limits, over_limits
from core.dispatch import measured_speed
from core.models import TERMINAL_STATUSES, Sweep, utcnow
from core.queries import owned, page
from core.settings import Settings
from core.sweep_spec import Plan, SweepError, plan_sweep
from core.sweeps import cancel_trials, stored_request, summarize, sweep_cost
from core.uploads import info_lookup
from service.errors import ApiError
from service.jobs import check_queued_cap, status_filter
from service.schemas import CostOut, SweepDryRun, SweepOut


def plan(payload: Any, datasets: Any) -> Plan:
    """The validated sweep; 422 with field paths (and a bad trial's values) otherwise."""
    try:
        return plan_sweep(payload, datasets)
    except SweepError as exc:
        raise ApiError(422, str(exc), code="invalid_sweep", details=exc.details) from None


def admit(plan: Plan, *, session: Session, settings: Settings) -> Cost:
    """The sweep's total cost, refused over a limit as one job's would be."""
    engine = plan.largest.engine
    cost = sweep_cost(plan, measured_speed(session, engine, settings.stale_after_seconds))
    problems = over_limits(cost, Limits(settings.max_job_flops, settings.max_data_bytes))
    if problems:
        details = [
            {"field": field, "message": f"the sweep's {plan.total} trials together: {message}"}
            for field, message in problems
        ]
        raise ApiError(422, details[0]["message"], code="over_limit", details=details)
    return cost


def dry_run(plan: Plan, cost: Cost) -> SweepDryRun:
    largest = max(plan.checked, key=lambda c: c[1].param_counts().total)
    grid = plan.request.strategy == "grid"
    return SweepDryRun(
        valid=True,
        strategy=plan.request.strategy,
        total=plan.total,
        trials=[params for params, _ in plan.checked] if grid else None,
        space=None if grid else plan.space.describe(),
        largest={"params": largest[0], "total_params": largest[1].param_counts().total},
        cost=CostOut.model_validate(cost.as_dict()),
    )


def create_sweep(
    plan: Plan, cost: Cost, *, session: Session, tenant_id: str, max_queued: int = 0
) -> Sweep:
    """Record the sweep, queued; the workers' controllers create and send its trials."""
    check_queued_cap(session, tenant_id, max_queued)
    sweep = Sweep(
        tenant_id=tenant_id,
        name=plan.request.name,
        status="queued",
        request=stored_request(plan),
        total=plan.total,
        cancel_requested=False,
        cost=cost.as_dict(),
    )
    session.add(sweep)
    session.commit()
    return sweep


def _admitted(
    payload: Any, *, session: Session, tenant_id: str, settings: Settings
) -> tuple[Plan, Cost]:
    planned = plan(payload, info_lookup(session, tenant_id))
    return planned, admit(planned, session=session, settings=settings)


def check_sweep(
    payload: Any, *, session: Session, tenant_id: str, settings: Settings
) -> SweepDryRun:
    """POST /v1/sweeps?dry_run=true and the dashboard's Check: validate and cost, record nothing."""
    return dry_run(*_admitted(payload, session=session, tenant_id=tenant_id, settings=settings))


def submit_sweep(payload: Any, *, session: Session, tenant_id: str, settings: Settings) -> Sweep:
    """POST /v1/sweeps, the dashboard's New sweep and Compare optimizers: validate (422), admit
    the total cost (422 over a limit), record it under the tenant's queued quota (429)."""
    planned, cost = _admitted(payload, session=session, tenant_id=tenant_id, settings=settings)
    return create_sweep(
        planned,
        cost,
        session=session,
        tenant_id=tenant_id,
        max_queued=settings.tenant_max_queued,
    )


def get_sweep(sweep_id: str, *, session: Session, tenant_id: str) -> Sweep:
    """The tenant's sweep; `NotFound` (404) for a missing or foreign id."""
    return owned(session, Sweep, sweep_id, tenant_id)


def sweep_out(sweep: Sweep, *, session: Session, board: bool = True) -> SweepOut:
    return SweepOut.from_row(sweep, summarize(session, sweep), board=board)


def list_sweeps(
    *, session: Session, tenant_id: str, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Sweep], str | None]:
    """Newest first; the cursor is the id of the last sweep of the previous page."""
    where = status_filter(Sweep.status, status)
    return page(session, Sweep, tenant_id, *where, limit=limit, cursor=cursor)


def cancel_sweep(sweep_id: str, *, session: Session, tenant_id: str) -> Sweep:
    """End the sweep: its queued trials at once, its running ones after their current epoch.

    No trial is created after this; the sweep is `cancelled` at once (its running trials end
    `cancelled` within about a second). A finished sweep answers 409.
    """
    sweep = get_sweep(sweep_id, session=session, tenant_id=tenant_id)
    if sweep.status in TERMINAL_STATUSES:
        raise ApiError(
            409,
            f"the sweep is already {sweep.status}; only a queued or running one can be cancelled",
        )
    now = utcnow()
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep.id, Sweep.status.in_(("queued", "running")))
        .values(
            status="cancelled",
            cancel_requested=True,
            finished_at=now,
            error_code="cancelled",
            error_message="cancelled on request",
        )
    )
    cancel_trials(session, sweep.id, "cancelled", "the sweep was cancelled")
    session.commit()
    session.refresh(sweep)
    return sweep
