"""Sweeps in the database: what one costs, and what its trials (ordinary jobs) add up to.

The sweep row holds the request and its state; its trials are jobs tagged with the sweep id,
their number and their parameter values, so the jobs table says what ran and how it went. The
leaderboard, best trial and progress are read from the trials whenever they are asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.cost import Cost, job_cost
from core.models import TERMINAL_STATUSES, Job, Sweep, utcnow
from core.sweep_spec import Plan

# The columns a summary reads from each trial.
TRIAL_COLUMNS = (
    Job.id,
    Job.trial,
    Job.status,
    Job.params,
    Job.metrics,
    Job.progress_epoch,
    Job.model_id,
    Job.error_code,
    Job.error_message,
    Job.info,
    Job.started_at,
    Job.finished_at,
    Job.train_seconds,
)


def sweep_cost(plan: Plan, flops_per_second: float | None = None) -> Cost:
    """The sum of the trials' costs: exact for a grid; for random and tpe, `total` times the
    costliest trial validated (an upper bound). Data bytes: the largest trial's."""
    costs = [job_cost(spec, flops_per_second) for _, spec in plan.checked]
    if plan.request.strategy == "grid":
        flops = sum(c.flops for c in costs)
        per_epoch = sum(c.flops_per_epoch for c in costs)
    else:
        flops = plan.total * max(c.flops for c in costs)
        per_epoch = plan.total * max(c.flops_per_epoch for c in costs)
    biggest = max(costs, key=lambda c: c.params)
    seconds = flops / flops_per_second if flops_per_second else None
    return Cost(
        params=biggest.params,
        fit_rows=max(c.fit_rows for c in costs),
        flops_per_epoch=per_epoch,
        flops=flops,
        data_bytes=max(c.data_bytes for c in costs),
        estimated_seconds=seconds,
    )


def stored_request(plan: Plan) -> dict[str, Any]:
    """The request as kept on the sweep row: the base spec with every default filled in."""
    request = plan.request.model_dump(mode="json")
    request["spec"] = plan.base
    request["max_trials"] = plan.total
    request["objective"]["direction"] = plan.request.objective.goal
    pruner = plan.request.pruner_spec
    request["pruner"] = None if pruner is None else pruner.model_dump(mode="json")
    return request


@dataclass(frozen=True)
class TrialRow:
    job_id: str
    trial: int
    status: str
    params: dict[str, Any]
    objective: float | None
    metrics: dict[str, Any]
    epochs: int
    seconds: float | None
    model_id: str | None
    error: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "trial": self.trial,
            "status": self.status,
            "params": self.params,
            "objective": self.objective,
            "metrics": self.metrics,
            "epochs": self.epochs,
            "seconds": self.seconds,
            "model_id": self.model_id,
            "error": self.error,
        }


def trial_rows(session: Session, sweep: Sweep) -> list[TrialRow]:
    """The sweep's trials, in trial order."""
    metric = sweep.request["objective"]["metric"]
    rows = session.execute(
        select(*TRIAL_COLUMNS).where(Job.sweep_id == sweep.id).order_by(Job.trial)
    ).all()
    return [_trial(row, metric) for row in rows]


def _trial(row: Any, metric: str) -> TrialRow:
    metrics = dict(row.metrics or {})
    value = metrics.get(metric)
    objective = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    error = None
    if row.error_code:
        error = {"code": row.error_code, "message": row.error_message}
        pruned = (row.info or {}).get("pruned")
        if pruned:
            error.update(epoch=pruned.get("epoch"), rule=pruned.get("rule"))
    return TrialRow(
        job_id=row.id,
        trial=row.trial,
        status=row.status,
        params=row.params or {},
        objective=objective,
        metrics=metrics,
        epochs=row.progress_epoch,
        seconds=_seconds(row.train_seconds, row.started_at, row.finished_at),
        model_id=row.model_id,
        error=error,
    )


def _seconds(train: float | None, started: datetime | None, finished: datetime | None) -> Any:
    if train is not None:
        return round(train, 3)
    if started is not None and finished is not None:
        return round((finished - started).total_seconds(), 3)
    return None


PENDING = ("running", "queued")


def leaderboard(trials: list[TrialRow], direction: str) -> list[TrialRow]:
    """Best first: succeeded trials by their objective, then the ended ones that have a value
    (pruned, failed, cancelled), then the rest, running before queued."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(t: TrialRow) -> tuple[int, float, int]:
        if t.status in PENDING:
            return (3 + PENDING.index(t.status), 0.0, t.trial)
        if t.objective is None:
            return (2, 0.0, t.trial)
        return (0 if t.status == "succeeded" else 1, sign * t.objective, t.trial)

    return sorted(trials, key=key)


def best_trial(trials: list[TrialRow], direction: str) -> TrialRow | None:
    """The succeeded trial with the best objective (None before any has succeeded)."""
    done = [t for t in trials if t.status == "succeeded" and t.objective is not None]
    if not done:
        return None
    return leaderboard(done, direction)[0]


@dataclass(frozen=True)
class Summary:
    finished: int
    total: int
    best: TrialRow | None
    board: list[TrialRow]


def summarize(session: Session, sweep: Sweep) -> Summary:
    """Progress, best trial and leaderboard, read from the trials now."""
    trials = trial_rows(session, sweep)
    direction = sweep.request["objective"]["direction"]
    finished = sum(1 for t in trials if t.status in TERMINAL_STATUSES)
    return Summary(
        finished, sweep.total, best_trial(trials, direction), leaderboard(trials, direction)
    )


def cancel_trials(session: Session, sweep_id: str, code: str, message: str) -> None:
    """Cancel the sweep's queued trials, and ask its running ones to stop."""
    session.execute(
        update(Job)
        .where(Job.sweep_id == sweep_id, Job.status == "queued")
        .values(
            status="cancelled",
            cancel_requested=True,
            finished_at=utcnow(),
            error_code=code,
            error_message=message + " before it started",
        )
    )
    session.execute(
        update(Job)
        .where(Job.sweep_id == sweep_id, Job.status == "running")
        .values(cancel_requested=True)
    )
