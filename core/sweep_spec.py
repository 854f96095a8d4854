"""A sweep request: a base job spec, a search space over its fields, a strategy and an objective.

The space maps field paths of the job spec (`optimizer`, `optimizer.learning_rate`,
`layers[0].units`, `batch_size`, ...) to a list of `choices` (values or whole objects) or to a
range `{low, high, log, type}`. A trial is the base spec with one value per path written in,
shortest paths first (so `optimizer` picks an object, then `optimizer.learning_rate` sets its
rate). Every trial is validated as a full job spec before anything runs: all of a grid's
combinations; for random and tpe, each choice and each range's ends with the other fields at
their first value, and the all-low and all-high corners (`representatives`).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from core.schema import Strict, Text
from core.spec import JobSpec, SpecError, field_path, parse_spec, to_stored

MAX_TRIALS = 1000  # the documented ceiling of max_trials (and of a grid's combinations)
MAX_PARALLEL = 100
MAX_CHOICES = 1000
DEFAULT_RANDOM_TRIALS = 20
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
FINAL_METRICS = ("test_loss", "test_accuracy")
Strategy = Literal["grid", "random", "tpe"]
PRUNERS = ("median", "successive_halving", "hyperband")

_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class Choices(Strict):
    choices: list[Any] = Field(min_length=1, max_length=MAX_CHOICES)


class Range(Strict):
    low: float
    high: float
    log: bool = False
    type: Literal["int", "float"] = "float"

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (low is {self.low:g})")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs whole-number low and high")
        return self


Dimension = Choices | Range


class Objective(Strict):
    metric: Literal[
        "val_loss", "val_accuracy", "loss", "accuracy", "test_loss", "test_accuracy"
    ] = "val_loss"
    direction: Literal["minimize", "maximize"] | None = None

    @property
    def goal(self) -> Literal["minimize", "maximize"]:
        """The direction given, else the metric's natural one (accuracy up, loss down)."""
        if self.direction is not None:
            return self.direction
        return "maximize" if self.metric.endswith("accuracy") else "minimize"


class PrunerSpec(Strict):
    type: Literal["median", "successive_halving", "hyperband"]
    # median: trials before any is pruned, epochs before a trial may be pruned.
    n_startup_trials: int = Field(5, ge=0, le=MAX_TRIALS)
    n_warmup_steps: int = Field(0, ge=0, le=10_000)
    # successive_halving and hyperband: the first rung's epoch and the fraction kept at each
    # (1/factor); hyperband: the most epochs a trial runs (null: the trial's own epochs).
    min_resource: int = Field(1, ge=1, le=10_000)
    reduction_factor: int = Field(3, ge=2, le=100)
    max_resource: int | None = Field(None, ge=1, le=10_000)


class SweepRequest(Strict):
    name: Text | None = Field(None, max_length=200)
    spec: dict[str, Any]
    space: dict[str, dict[str, Any]] = Field(min_length=1, max_length=64)
    strategy: Strategy = "random"
    objective: Objective = Objective()
    max_trials: int | None = Field(None, ge=1)
    max_parallel: int = Field(4, ge=1, le=MAX_PARALLEL)
    pruner: PrunerSpec | None = Field(
        None,
        description='A name ("median", "successive_halving", "hyperband"), or {"type": NAME, '
        "...its settings}; null: no pruning",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_by_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @property
    def pruner_spec(self) -> PrunerSpec | None:
        return self.pruner


class SweepError(ValueError):
    """A sweep request that failed validation; `details` as SpecError's, plus trial values."""

    def __init__(self, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Path:
    text: str
    parts: tuple[str | int, ...]


def parse_path(text: str) -> Path:
    """`layers[0].units` -> ("layers", 0, "units"); ValueError for anything else."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        if parts and text[pos] == ".":
            pos += 1
        match = _TOKEN.match(text, pos)
        if match is None or (match.group(1) and parts and text[pos - 1] != "."):
            raise ValueError("not a field path like optimizer.learning_rate or layers[0].units")
        name, index = match.groups()
        parts.append(name if name is not None else int(index))
        pos = match.end()
    if not parts or isinstance(parts[0], int):
        raise ValueError("not a field path like optimizer.learning_rate or layers[0].units")
    return Path(text, tuple(parts))


def _resolve_parent(spec: Any, parts: tuple[str | int, ...]) -> Any:
    node = spec
    for part in parts[:-1]:
        node = _child(node, part)
    return node


def _child(node: Any, part: str | int) -> Any:
    if isinstance(part, int):
        if not isinstance(node, list) or part >= len(node):
            raise KeyError(part)
        return node[part]
    if not isinstance(node, dict) or part not in node:
        raise KeyError(part)
    return node[part]


def set_path(spec: dict[str, Any], path: Path, value: Any) -> None:
    """Write `value` at `path` in `spec` (in place); KeyError if its parent is not there."""
    parent = _resolve_parent(spec, path.parts)
    last = path.parts[-1]
    if isinstance(last, int):
        if not isinstance(parent, list) or last >= len(parent):
            raise KeyError(last)
    elif not isinstance(parent, dict):
        raise KeyError(last)
    parent[last] = copy.deepcopy(value)


@dataclass(frozen=True)
class Space:
    """The parsed search space, in the request's order."""

    paths: dict[str, Path]
    dims: dict[str, Dimension]

    def apply(self, base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The base spec with each parameter written in, shortest paths first."""
        spec = copy.deepcopy(base)
        for name in sorted(params, key=lambda n: len(self.paths[n].parts)):
            set_path(spec, self.paths[name], params[name])
        return spec

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the choices, the first path varying slowest."""
        names = list(self.dims)
        values = [self.dims[n].choices for n in names]  # type: ignore[union-attr]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]

    def grid_size(self) -> int:
        return math.prod(len(d.choices) for d in self.dims.values() if isinstance(d, Choices))

    def representatives(self) -> list[dict[str, Any]]:
        """Trials that cover every choice and each range's ends (random and tpe)."""
        first = {n: _ends(d)[0] for n, d in self.dims.items()}
        trials = [first, {n: _ends(d)[-1] for n, d in self.dims.items()}]
        for name, dim in self.dims.items():
            for value in _ends(dim):
                trials.append({**first, name: value})
        unique: dict[str, dict[str, Any]] = {}
        for trial in trials:
            unique.setdefault(json.dumps(trial, sort_keys=True), trial)
        return list(unique.values())

    def describe(self) -> dict[str, Any]:
        """The space as the dry run shows it."""
        return {n: d.model_dump() for n, d in self.dims.items()}


def _ends(dim: Dimension) -> list[Any]:
    if isinstance(dim, Choices):
        return list(dim.choices)
    cast = int if dim.type == "int" else float
    return [cast(dim.low), cast(dim.high)]


def parse_space(raw: dict[str, dict[str, Any]], base: dict[str, Any]) -> Space:
    """Each path checked against the (defaults-filled) base spec, each dimension parsed."""
    problems: list[dict[str, Any]] = []
    paths: dict[str, Path] = {}
    dims: dict[str, Dimension] = {}
    for name, body in raw.items():
        field = f"space.{name}"
        try:
            path = parse_path(name)
        except ValueError as exc:
            problems.append({"field": field, "message": str(exc)})
            continue
        try:
            dim: Dimension
            if isinstance(body, dict) and "choices" in body:
                dim = Choices.model_validate(body)
            else:
                dim = Range.model_validate(body)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = field_path(error["loc"]) if error["loc"] else ""
                message = error["msg"].removeprefix("Value error, ")
                if error["type"] == "missing" and not isinstance(body, dict):
                    message = "give {'choices': [...]} or {'low', 'high'}"
                problems.append(
                    {"field": f"{field}.{where}" if where else field, "message": message}
                )
            continue
        paths[name], dims[name] = path, dim
    # A path must name a field the spec has, or one of a chosen object's (optimizer.momentum
    # when the optimizer is chosen among objects that have it).
    for name, path in paths.items():
        if not _known(path, base, paths, dims):
            problems.append(
                {
                    "field": f"space.{name}",
                    "message": f"unknown field path {name!r}: the job spec has no such field",
                }
            )
    if problems:
        first = problems[0]
        raise SweepError(f"{first['field']}: {first['message']}", problems)
    return Space(paths, dims)


def _known(path: Path, base: dict[str, Any], paths: dict[str, Path], dims: dict[str, Any]) -> bool:
    try:
        parent = _resolve_parent(base, path.parts)
        _child(parent, path.parts[-1])
        return True
    except KeyError:
        pass
    for name, other in paths.items():  # a prefix chosen among objects that have the field
        n = len(other.parts)
        if n < len(path.parts) and path.parts[:n] == other.parts:
            dim = dims[name]
            if isinstance(dim, Choices) and any(
                _has(_filled(base, other, choice), path.parts) for choice in dim.choices
            ):
                return True
    return False


def _filled(base: dict[str, Any], path: Path, choice: Any) -> Any:
    """The base spec with `choice` at `path`, defaults filled in (as given if it is invalid)."""
    spec = copy.deepcopy(base)
    try:
        set_path(spec, path, choice)
        return to_stored(parse_spec(spec))
    except (KeyError, SpecError):
        return spec


def _has(node: Any, parts: tuple[str | int, ...]) -> bool:
    try:
        for part in parts:
            node = _child(node, part)
        return True
    except KeyError:
        return False


@dataclass(frozen=True)
class Plan:
    """A validated sweep: its request, base spec (defaults filled), space and total trials."""

    request: SweepRequest
    base: dict[str, Any]
    space: Space
    total: int
    checked: list[tuple[dict[str, Any], JobSpec]]  # the trials validated (all of a grid's)

    @property
    def largest(self) -> JobSpec:
        """The validated trial with the most parameters."""
        return max((spec for _, spec in self.checked), key=lambda s: s.param_counts().total)


def trial_spec(
    space: Space, base: dict[str, Any], params: dict[str, Any], number: int, datasets: Any = None
) -> JobSpec:
    """The job spec of one trial, or SweepError naming the trial's values and field paths."""
    try:
        raw = space.apply(base, params)
    except KeyError as exc:
        raise SweepError(
            f"trial {number} cannot be built",
            [{"field": "space", "message": f"no field {exc}", "params": params}],
        ) from None
    try:
        return parse_spec(raw, datasets)
    except SpecError as exc:
        details = [{**d, "field": f"spec.{d['field']}", "params": params} for d in exc.details]
        raise SweepError(
            f"trial {number} is not a valid job spec: "
            + "; ".join(f"{d['field']}: {d['message']}" for d in details),
            details,
        ) from None


def plan_sweep(payload: Any, datasets: Any = None) -> Plan:
    """Parse and check a sweep request; SweepError (a 422) with field paths otherwise."""
    if not isinstance(payload, dict):
        raise SweepError(
            "the sweep must be a JSON object", [{"field": "$", "message": "not an object"}]
        )
    try:
        request = SweepRequest.model_validate(payload)
    except ValidationError as exc:
        details = [
            {"field": field_path(e["loc"]), "message": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors(include_url=False)
        ]
        first = details[0]
        raise SweepError(f"{first['field']}: {first['message']}", details) from None
    try:
        base_spec = parse_spec(request.spec, datasets)
    except SpecError as exc:
        details = [{**d, "field": f"spec.{d['field']}"} for d in exc.details]
        raise SweepError(
            f"the base job spec is not valid ({details[0]['field']}: {details[0]['message']})",
            details,
        ) from None
    base = to_stored(base_spec)
    space = parse_space(request.space, base)
    _check_objective(request, base_spec, space)
    if request.strategy == "grid":
        ranges = [n for n, d in space.dims.items() if isinstance(d, Range)]
        if ranges:
            raise SweepError(
                "a grid takes only lists of choices",
                [
                    {
                        "field": f"space.{n}",
                        "message": "a range in a grid: give choices, or "
                        "use the random or tpe strategy",
                    }
                    for n in ranges
                ],
            )
        size = space.grid_size()
        limit = min(request.max_trials or MAX_TRIALS, MAX_TRIALS)
        if size > limit:
            which = (
                "max_trials"
                if request.max_trials and request.max_trials < MAX_TRIALS
                else (f"the limit of {MAX_TRIALS:,} trials")
            )
            raise SweepError(
                f"the grid has {size:,} combinations, more than {which} ({limit:,})",
                [
                    {
                        "field": "max_trials" if request.max_trials else "space",
                        "message": f"the grid has {size:,} combinations; at most {limit:,}",
                    }
                ],
            )
        candidates = space.grid()
        total = size
    else:
        candidates = space.representatives()
        total = request.max_trials or DEFAULT_RANDOM_TRIALS
    if total > MAX_TRIALS:
        raise SweepError(
            f"max_trials is {total:,}; the limit is {MAX_TRIALS:,}",
            [{"field": "max_trials", "message": f"at most {MAX_TRIALS:,}"}],
        )
    checked = []
    problems: list[dict[str, Any]] = []
    for number, params in enumerate(candidates):
        try:
            checked.append((params, trial_spec(space, base, params, number, datasets)))
        except SweepError as exc:
            problems.extend(exc.details)
            if len(problems) >= 20:
                break
    if problems:
        first = problems[0]
        raise SweepError(
            f"a trial is not a valid job spec ({first['field']}: {first['message']}; "
            f"its values: {json.dumps(first.get('params'))})",
            problems,
        )
    return Plan(request, base, space, total, checked)


def _check_objective(request: SweepRequest, spec: JobSpec, space: Space) -> None:
    metric = request.objective.metric
    problems = []
    if metric.endswith("accuracy") and spec.task == "regression":
        problems.append({"field": "objective.metric", "message": "regression reports no accuracy"})
    if (
        metric.startswith("val_")
        and spec.split.validation_split == 0
        and "split.validation_split" not in space.dims
    ):
        problems.append(
            {
                "field": "objective.metric",
                "message": f"{metric} needs a validation set: set spec.split.validation_split",
            }
        )
    if request.pruner is not None and metric in FINAL_METRICS:
        problems.append(
            {
                "field": "pruner",
                "message": f"a pruner compares epochs; {metric} is only known at the end",
            }
        )
    if problems:
        raise SweepError(problems[0]["message"], problems)
