"""A job's cost before it runs; each limit that refuses one says which, and by how much."""

from __future__ import annotations

import copy

from core.cost import Limits, job_cost, over_limits
from core.spec import parse_spec
from tests.support import SEED_SPEC

LIMITS = Limits(max_job_flops=10**14, max_data_bytes=1024**3)


def test_the_seed_jobs_cost() -> None:
    cost = job_cost(parse_spec(SEED_SPEC), flops_per_second=1e9)
    # 4,451 parameters x 640 training rows x 6, for 50 epochs; 1,000 rows x (20 + 1) x 12 bytes.
    assert (cost.params, cost.fit_rows) == (4451, 640)
    assert cost.flops_per_epoch == 6 * 4451 * 640
    assert cost.flops == 50 * cost.flops_per_epoch
    assert cost.data_bytes == 1000 * 21 * 12
    assert cost.estimated_seconds is not None
    assert abs(cost.estimated_seconds - cost.flops / 1e9) < 1e-9
    assert over_limits(cost, LIMITS) == []
    assert job_cost(parse_spec(SEED_SPEC)).estimated_seconds is None  # no measured speed yet


def test_a_huge_network_is_refused_naming_the_limit_and_the_factor() -> None:
    spec = copy.deepcopy(SEED_SPEC)
    spec["dataset"]["params"].update(n_samples=100_000, n_features=500)
    spec["layers"][0]["units"] = 4096
    spec["epochs"] = 5000
    spec["batch_size"] = 1
    ((field, message),) = over_limits(job_cost(parse_spec(spec)), LIMITS)
    assert field == "epochs"
    assert "(MAX_JOB_FLOPS)" in message and "times the limit of 100 TFLOP" in message


def test_data_that_cannot_fit_in_memory_is_refused() -> None:
    spec = copy.deepcopy(SEED_SPEC)
    spec["dataset"]["params"].update(n_samples=1_000_000, n_features=10_000)
    spec["layers"][0]["units"] = 8
    spec["epochs"] = 1
    problems = dict(over_limits(job_cost(parse_spec(spec)), LIMITS))
    assert "the data needs 112 GiB in memory" in problems["dataset"]
    assert "(MAX_DATA_BYTES)" in problems["dataset"]


def test_an_estimate_is_shown_but_never_refuses() -> None:
    cost = job_cost(parse_spec(SEED_SPEC), flops_per_second=1e3)  # a very slow worker
    assert cost.estimated_seconds is not None and cost.estimated_seconds > 86400
    assert over_limits(cost, LIMITS) == []
