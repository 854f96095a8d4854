"""The sweep controller and the trials' pruner, with Optuna's samplers and pruners.

Why not Optuna's RDBStorage on our database: it runs its own Alembic migrations and keeps its
revision in the default `alembic_version` table, which is ours too, so the two would collide
(Optuna finds our revision, takes the storage for initialized, then refuses its schema). Instead
our tables are the source of truth, as for every job: the sweep row holds the request, and its
trials are ordinary jobs tagged with the sweep id, a trial number and the parameter values.
Whenever a controller must choose parameters, or a trial must decide whether to stop, it builds
an in-memory Optuna study from those rows (`optuna.trial.create_trial` with the space's
distributions, each finished trial's value and per-epoch values) and asks it (ask-and-tell).

Two controllers never create a trial twice: a trial is a job row with a unique (sweep id, trial
number), so the second insert of trial n fails and its whole transaction is rolled back; on
PostgreSQL the sweep row is also locked (SKIP LOCKED: a busy sweep is left to the controller
that holds it). Controllers run on every worker's timer (beside the reaper and the
dispatcher) and in the pool process as soon as one of the sweep's trials ends.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from core.cost import job_cost
from core.db import Database
from core.models import TERMINAL_STATUSES, Job, JobMetric, Sweep, utcnow
from core.spec import to_stored
from core.sweep_spec import Choices, PrunerSpec, Range, Space, SweepError, parse_space, trial_spec
from core.sweeps import cancel_trials
from core.uploads import info_lookup

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

ACTIVE = ("queued", "running")


def distributions(space: Space) -> dict[str, BaseDistribution]:
    """Optuna's distribution for each path: choices by their index (they may be objects)."""
    out: dict[str, BaseDistribution] = {}
    for name, dim in space.dims.items():
        if isinstance(dim, Choices):
            out[name] = CategoricalDistribution(list(range(len(dim.choices))))
        elif dim.type == "int":
            out[name] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        else:
            out[name] = FloatDistribution(dim.low, dim.high, log=dim.log)
    return out


def to_optuna(space: Space, params: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's values as Optuna's parameters (choice indexes); None if one is not in the space."""
    out: dict[str, Any] = {}
    for name, dim in space.dims.items():
        if name not in params:
            return None
        value = params[name]
        if isinstance(dim, Choices):
            if value not in dim.choices:
                return None
            out[name] = dim.choices.index(value)
        else:
            out[name] = value
    return out


def from_optuna(space: Space, params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, dim in space.dims.items():
        value = params[name]
        if isinstance(dim, Choices):
            out[name] = dim.choices[value]
        elif isinstance(dim, Range) and dim.type == "int":
            out[name] = int(value)
        else:
            out[name] = float(value)
    return out


@dataclass(frozen=True)
class Finished:
    """A trial as Optuna sees it: its parameters, state, value and per-epoch values."""

    params: dict[str, Any]
    state: TrialState
    value: float | None
    curve: dict[int, float]


def frozen(f: Finished, dists: dict[str, BaseDistribution], **extra: Any) -> Any:
    return create_trial(
        state=f.state,
        value=f.value if f.state == TrialState.COMPLETE else None,
        params=f.params,
        distributions={k: dists[k] for k in f.params},
        intermediate_values=f.curve,
        **extra,
    )


def ask(
    request: dict[str, Any],
    space: Space,
    first: int,
    count: int,
    history: list[Finished],
    grid: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Parameters for trials `first` .. `first + count - 1` (grid: in order; random and tpe:
    Optuna's sampler, seeded by the sweep's seed and the trial number)."""
    if count <= 0:
        return []
    if request["strategy"] == "grid":
        return (grid if grid is not None else space.grid())[first : first + count]
    dists = distributions(space)
    seed = int(request["seed"])
    out: list[dict[str, Any]] = []
    direction = request["objective"]["direction"]
    if request["strategy"] == "random":
        for number in range(first, first + count):
            sampler = optuna.samplers.RandomSampler(seed=(seed * 1_000_003 + number) % 2**32)
            study = optuna.create_study(direction=direction, sampler=sampler)
            out.append(from_optuna(space, study.ask(dists).params))
        return out
    tpe = optuna.samplers.TPESampler(seed=(seed * 1_000_003 + first) % 2**32)
    study = optuna.create_study(direction=direction, sampler=tpe)
    study.add_trials([frozen(f, dists) for f in history])
    for _ in range(count):
        trial = study.ask(dists)
        out.append(from_optuna(space, trial.params))
    return out


_SPACES: dict[str, tuple[Space, list[dict[str, Any]] | None]] = {}


def load_space(sweep_id: str, request: dict[str, Any]) -> tuple[Space, list[dict[str, Any]] | None]:
    """The sweep's parsed space and (grid) its combinations, kept per process: a sweep's
    request never changes."""
    cached = _SPACES.get(sweep_id)
    if cached is None:
        space = parse_space(request["space"], request["spec"])
        cached = (space, space.grid() if request["strategy"] == "grid" else None)
        if len(_SPACES) >= 64:
            _SPACES.pop(next(iter(_SPACES)))
        _SPACES[sweep_id] = cached
    return cached


def history_of(db_rows: list[Any], space: Space, metric: str) -> list[Finished]:
    """The trials so far as Optuna's: succeeded = complete, pruned = pruned, the rest failed
    (running ones are left out: their values are not known yet)."""
    out = []
    for row in db_rows:
        params = to_optuna(space, row.params or {})
        if params is None or row.status in ACTIVE:
            continue
        value = (row.metrics or {}).get(metric)
        if row.status == "succeeded" and isinstance(value, int | float) and math.isfinite(value):
            out.append(Finished(params, TrialState.COMPLETE, float(value), {}))
        elif row.error_code == "pruned":
            out.append(Finished(params, TrialState.PRUNED, None, {}))
        else:
            out.append(Finished(params, TrialState.FAIL, None, {}))
    return out


def advance(db: Database, sweep_id: str) -> list[str]:
    """One controller step for one sweep: start it, create the trials that fit in
    `max_parallel`, end it when all have ended. Returns the ids of the trials created."""
    created: list[str] = []
    try:
        with db.begin() as session:
            query = select(Sweep).where(Sweep.id == sweep_id)
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            sweep = session.scalar(query)
            if sweep is None:
                return []
            if sweep.status in TERMINAL_STATUSES:
                if sweep.status == "cancelled":  # a trial created in a race with the cancel
                    cancel_trials(session, sweep.id, "cancelled", "the sweep was cancelled")
                return []
            created = _step(session, sweep)
    except IntegrityError:
        log.info("sweep %s: another controller created the same trial; nothing done", sweep_id)
        return []
    if created:
        log.info("sweep %s: created %d trial(s)", sweep_id, len(created))
    return created


def _step(session: Any, sweep: Sweep) -> list[str]:
    request = sweep.request
    rows = session.execute(
        select(
            Job.id,
            Job.trial,
            Job.status,
            Job.params,
            Job.metrics,
            Job.error_code,
            Job.started_at,
        ).where(Job.sweep_id == sweep.id)
    ).all()
    now = utcnow()
    started = [r.started_at for r in rows if r.started_at is not None]
    if sweep.status == "queued" and started:
        session.execute(
            update(Sweep)
            .where(Sweep.id == sweep.id, Sweep.status == "queued")
            .values(status="running", started_at=min(started))
        )
    active = sum(1 for r in rows if r.status in ACTIVE)
    if len(rows) >= sweep.total and not active:
        succeeded = any(r.status == "succeeded" for r in rows)
        values: dict[str, Any] = {
            "status": "succeeded" if succeeded else "failed",
            "finished_at": now,
        }
        if not succeeded:
            values.update(
                error_code="no_trial_succeeded",
                error_message=f"none of the {len(rows)} trials succeeded",
            )
        if not started:
            values["started_at"] = now
        session.execute(
            update(Sweep).where(Sweep.id == sweep.id, Sweep.status.in_(ACTIVE)).values(**values)
        )
        log.info("sweep %s %s", sweep.id, values["status"])
        return []
    count = min(int(request["max_parallel"]) - active, sweep.total - len(rows))
    if count <= 0:
        return []
    space, grid = load_space(sweep.id, request)
    metric = request["objective"]["metric"]
    history = history_of(rows, space, metric) if request["strategy"] == "tpe" else []
    first = len(rows)
    lookup = info_lookup(session, sweep.tenant_id)
    created = []
    for offset, params in enumerate(ask(request, space, first, count, history, grid)):
        number = first + offset
        job = Job(
            tenant_id=sweep.tenant_id,
            name=f"{sweep.name or 'sweep'} #{number}",
            status="queued",
            attempts=0,
            progress_epoch=0,
            cancel_requested=False,
            sweep_id=sweep.id,
            trial=number,
            params=params,
        )
        try:
            spec = trial_spec(space, request["spec"], params, number, lookup)
        except SweepError as exc:  # a corner the validation did not reach: the trial fails
            job.engine = str(request["spec"].get("engine", "numpy"))
            job.spec = space.apply(request["spec"], params)
            job.progress_epochs = 0
            job.status = "failed"
            job.error_code = "invalid_spec"
            job.error_message = str(exc)
            job.finished_at = now
        else:
            job.engine = spec.engine
            job.spec = to_stored(spec)
            job.progress_epochs = spec.epochs
            job.cost = job_cost(spec).as_dict()
        session.add(job)
        session.flush()  # the unique (sweep, trial) refuses a second controller's insert here
        created.append(job.id)
    return created


def active_sweeps(db: Database, limit: int = 200) -> list[str]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Sweep.id).where(Sweep.status.in_(ACTIVE)).order_by(Sweep.id).limit(limit)
            )
        )


def advance_all(db: Database) -> list[str]:
    """A controller pass over every unfinished sweep; the trial ids created."""
    created: list[str] = []
    for sweep_id in active_sweeps(db):
        try:
            created.extend(advance(db, sweep_id))
        except Exception:
            log.exception("sweep %s: controller step failed", sweep_id)
    return created


# --- pruning, decided in the trial's own process after each epoch ---------------------------


class Pruned(Exception):
    """The sweep's pruner stopped this trial."""

    def __init__(self, epoch: int, rule: str, value: float, message: str) -> None:
        super().__init__(message)
        self.epoch, self.rule, self.value = epoch, rule, value

    def info(self) -> dict[str, Any]:
        return {"pruned": {"epoch": self.epoch, "rule": self.rule, "value": self.value}}


def make_pruner(spec: PrunerSpec, epochs: int) -> optuna.pruners.BasePruner:
    if spec.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps
        )
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource,
            max_resource=spec.max_resource or epochs,
            reduction_factor=spec.reduction_factor,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=spec.min_resource, reduction_factor=spec.reduction_factor
    )


class TrialPruner:
    """Asks the sweep's pruner after each epoch whether this trial should stop.

    The other trials' per-epoch values are read from the database into an in-memory study at
    the first epoch and again every `refresh_seconds`; this trial reports to it as Optuna's
    ask-and-tell interface has a trial do (`report`, then `should_prune`).
    """

    def __init__(
        self,
        db: Database,
        job_id: str,
        sweep_id: str,
        metric: str,
        direction: str,
        spec: PrunerSpec,
        refresh_seconds: float = 1.0,
        *,
        number: int = 0,
        epochs: int = 1,
    ) -> None:
        self.db, self.job_id, self.sweep_id = db, job_id, sweep_id
        self.number, self.epochs = number, epochs
        self.metric, self.direction, self.spec = metric, direction, spec
        self.refresh_seconds = refresh_seconds
        self.reported: dict[int, float] = {}
        self._study: optuna.Study | None = None
        self._live: optuna.Trial | None = None
        self._built = -math.inf
        self._others: dict[int, list[float]] = {}  # per epoch, the completed trials' values

    @classmethod
    def for_job(cls, db: Database, job: Job) -> TrialPruner | None:
        if job.sweep_id is None:
            return None
        with db.session() as session:
            request = session.scalar(select(Sweep.request).where(Sweep.id == job.sweep_id))
        if not request or not request.get("pruner"):
            return None
        objective = request["objective"]
        spec = PrunerSpec.model_validate(request["pruner"])
        return cls(
            db,
            job.id,
            job.sweep_id,
            objective["metric"],
            objective["direction"],
            spec,
            number=job.trial or 0,
            epochs=job.progress_epochs,
        )

    def __call__(self, epoch: int, value: float | None) -> None:
        """Raise Pruned if the pruner stops the trial after this epoch."""
        if value is None or not math.isfinite(value) or epoch >= self.epochs:
            return  # after the last epoch stopping saves nothing: the trial completes
        self.reported[epoch] = value
        if self._live is None or time.monotonic() - self._built >= self.refresh_seconds:
            self._rebuild()
        else:
            assert self._live is not None
            self._live.report(value, epoch)
        assert self._live is not None
        if self._live.should_prune():
            raise Pruned(epoch, self.spec.type, value, self._message(epoch, value))

    def _rebuild(self) -> None:
        with self.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.trial, Job.status, Job.error_code, Job.metrics).where(
                    Job.sweep_id == self.sweep_id, Job.id != self.job_id
                )
            ).all()
            column = getattr(JobMetric, self.metric)
            curves: dict[str, dict[int, float]] = {row.id: {} for row in rows}
            if rows:
                for job_id, epoch, value in session.execute(
                    select(JobMetric.job_id, JobMetric.epoch, column).where(
                        JobMetric.job_id.in_(list(curves))
                    )
                ):
                    if value is not None and math.isfinite(value):
                        curves[job_id][int(epoch)] = float(value)
        # Trial numbers as ours (Hyperband puts a trial in a bracket by its number and the
        # study's name): the others in number order, a failed placeholder for any gap.
        found: dict[int, tuple[TrialState, float | None, dict[int, float]]] = {}
        self._others = {}
        for row in rows:
            curve = curves[row.id]
            final = (row.metrics or {}).get(self.metric)
            if not curve or row.trial is None:
                continue
            if row.status == "succeeded":
                value = final if isinstance(final, int | float) else curve[max(curve)]
                found[row.trial] = (TrialState.COMPLETE, float(value), curve)
                for epoch, v in curve.items():
                    self._others.setdefault(epoch, []).append(v)
            elif row.error_code == "pruned" or row.status in ACTIVE:
                state = TrialState.PRUNED if row.error_code == "pruned" else TrialState.RUNNING
                found[row.trial] = (state, None, curve)
        pruner = make_pruner(self.spec, self.epochs)
        study = optuna.create_study(
            study_name=f"sweep-{self.sweep_id}",
            direction=self.direction,  # type: ignore[arg-type]
            pruner=pruner,
        )
        if isinstance(pruner, optuna.pruners.HyperbandPruner):
            pruner._try_initialization(study)  # its brackets, so each trial's is known

        def trial(number: int) -> Any:
            if number not in found:
                return create_trial(state=TrialState.FAIL)
            state, value, curve = found[number]
            attrs = self._rungs(curve, self._bracket(study, number))
            return create_trial(
                state=state, value=value, intermediate_values=curve, system_attrs=attrs
            )

        study.add_trials([trial(n) for n in range(self.number)])
        live = study.ask()
        last = max(found, default=-1)
        study.add_trials([trial(n) for n in range(self.number + 1, last + 1)])
        for epoch, value in sorted(self.reported.items()):
            live.report(value, epoch)
        bracket = self._bracket(study, self.number)
        for key, value in self._rungs(self.reported, bracket, max(self.reported)).items():
            study._storage.set_trial_system_attr(live._trial_id, key, value)
        self._study, self._live = study, live
        self._built = time.monotonic()

    @staticmethod
    def _bracket(study: optuna.Study, number: int) -> int:
        """Hyperband's bracket for trial `number` (from the study's name and the number)."""
        pruner = study.pruner
        if not isinstance(pruner, optuna.pruners.HyperbandPruner):
            return 0
        return pruner._get_bracket_id(study, SimpleNamespace(number=number))  # type: ignore[arg-type]

    def _rungs(
        self, curve: dict[int, float], bracket: int = 0, before: int | None = None
    ) -> dict[str, float]:
        """Successive halving's record of the rungs a trial has passed (its value at each
        rung's epoch, before epoch `before`), as the pruner would have written it had it seen
        the trial run: it keeps that record on the trials, and our study is rebuilt."""
        if self.spec.type == "median":
            return {}
        attrs: dict[str, float] = {}
        rung = 0
        while True:
            step = self.spec.min_resource * self.spec.reduction_factor ** (bracket + rung)
            if step not in curve or (before is not None and step >= before):
                return attrs
            attrs[f"completed_rung_{rung}"] = curve[step]
            rung += 1

    def _message(self, epoch: int, value: float) -> str:
        if self.spec.type == "median":
            others = self._others.get(epoch, [])
            median = statistics.median(others) if others else math.nan
            return (
                f"pruned after epoch {epoch} by the median rule: {self.metric} {value:.4g} is "
                f"worse than the median {median:.4g} of {len(others)} finished trials at that "
                "epoch"
            )
        name = "hyperband" if self.spec.type == "hyperband" else "successive halving"
        return (
            f"pruned after epoch {epoch} by {name} (reduction factor "
            f"{self.spec.reduction_factor}): {self.metric} {value:.4g} is not among the best "
            "trials at that rung"
        )


def trial_ended(db: Database, job_id: str) -> list[str]:
    """After a trial ends, in its process: the controller step for its sweep, at once."""
    with db.session() as session:
        sweep_id = session.scalar(select(Job.sweep_id).where(Job.id == job_id))
    if sweep_id is None:
        return []
    return advance(db, sweep_id)
