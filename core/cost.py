"""What a job costs before it runs: parameters, floating-point operations, memory, and time.

Training a dense network costs about 6 floating-point operations per parameter per row (2 for
the forward pass, 4 for the backward pass), so an epoch costs `6 x parameters x training rows`
and a job `x epochs`. The data costs `rows x features x 12` bytes while a job runs (float64 as
loaded, float32 as trained). The time is the operations divided by the throughput the workers
measured on their last jobs (`workers` table); unknown until a worker has measured one. The
estimate is shown, never used to refuse a job: a worker's speed on small jobs says little about
a large one (fixed costs per batch and per epoch weigh more on small networks, and on Keras).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.dataset_spec import n_fit_rows, n_test_rows
from core.spec import JobSpec

FLOPS_PER_PARAM_ROW = 6
BYTES_PER_VALUE = 8 + 4  # float64 as loaded + float32 as trained


@dataclass(frozen=True)
class Cost:
    params: int
    fit_rows: int
    flops_per_epoch: int
    flops: int
    data_bytes: int
    estimated_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    """The documented ceilings a job must stay under (0: no ceiling)."""

    max_job_flops: int
    max_data_bytes: int


def job_cost(spec: JobSpec, flops_per_second: float | None = None) -> Cost:
    """The cost of `spec`, with a time estimate when a throughput is known."""
    shape = spec.data_shape()
    params = spec.param_counts().total
    n_train = shape.n_samples - n_test_rows(shape.n_samples, spec.split.test_size)
    fit = n_fit_rows(n_train, spec.split.validation_split)
    per_epoch = FLOPS_PER_PARAM_ROW * params * fit
    flops = per_epoch * spec.epochs
    width = shape.n_features + max(shape.n_targets, 1)
    data_bytes = shape.n_samples * width * BYTES_PER_VALUE
    seconds = flops / flops_per_second if flops_per_second else None
    return Cost(params, fit, per_epoch, flops, data_bytes, seconds)


def over_limits(cost: Cost, limits: Limits) -> list[tuple[str, str]]:
    """(field, message) for each limit `cost` exceeds, saying which limit and by how much."""
    problems = []
    if limits.max_job_flops and cost.flops > limits.max_job_flops:
        problems.append(
            (
                "epochs",
                f"the job needs {_si(cost.flops)}FLOP ({cost.params:,} parameters x "
                f"{cost.fit_rows:,} rows x {cost.flops // max(cost.flops_per_epoch, 1):,} "
                f"epochs x {FLOPS_PER_PARAM_ROW}), {cost.flops / limits.max_job_flops:.1f} times "
                f"the limit of {_si(limits.max_job_flops)}FLOP (MAX_JOB_FLOPS)",
            )
        )
    if limits.max_data_bytes and cost.data_bytes > limits.max_data_bytes:
        problems.append(
            (
                "dataset",
                f"the data needs {_bytes(cost.data_bytes)} in memory, "
                f"{cost.data_bytes / limits.max_data_bytes:.1f} times the limit of "
                f"{_bytes(limits.max_data_bytes)} (MAX_DATA_BYTES)",
            )
        )
    return problems


def _si(value: float) -> str:
    """1.3 T, 45 G, …: a count with an SI prefix (and a space before the unit)."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.0f} "


def _bytes(value: float) -> str:
    for factor, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{value:.0f} B"
