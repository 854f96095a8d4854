"""The predict body's quick read (no pydantic for an ordinary body) accepts exactly what the
pydantic model accepts, and gives the same rows."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from core.runtime import NotFinite, Predictor
from service.predictions import PredictRequest, _plain_rows

BODIES = [
    '{"instances": [[1, 2.5]]}',
    '{"instances": [[1, 2.5], [-3e10, 0]]}',
    '{"instances": [[100000000000000000000, 0.1]]}',
    '{"instances": [[NaN, 1]]}',
    '{"instances": [[Infinity, 1]]}',
    '{"instances": [[1e400, 1]]}',
    '{"instances": [[' + "9" * 400 + ", 1]]}",
    '{"instances": [[true, 1]]}',
    '{"instances": [["1", 1]]}',
    '{"instances": [[null, 1]]}',
    '{"instances": [[1, 2, 3]]}',
    '{"instances": [[1]]}',
    '{"instances": [1, 2]}',
    '{"instances": []}',
    '{"instances": [[1, 2]], "extra": 1}',
    '{"rows": [[1, 2]]}',
    "[[1, 2]]",
    '{"instances": {"0": [1, 2]}}',
]


def pydantic_rows(payload: Any, width: int) -> np.ndarray | None:
    try:
        rows = PredictRequest.model_validate(payload).instances
    except ValidationError:
        return None
    return np.asarray(rows, dtype=np.float64) if all(len(r) == width for r in rows) else None


@pytest.mark.parametrize("body", BODIES)
def test_quick_read_agrees_with_the_model(body: str) -> None:
    payload = json.loads(body)
    quick = _plain_rows(payload, 2, 10)
    expected = pydantic_rows(payload, 2)
    if quick is None:  # left to the full check, which explains what is wrong (or accepts it)
        return
    assert expected is not None, body
    assert quick.dtype == np.float64 and np.array_equal(quick, expected)


def test_quick_read_takes_the_ordinary_bodies_and_the_row_limit() -> None:
    assert _plain_rows(json.loads(BODIES[0]), 2, 10) is not None
    assert _plain_rows(json.loads(BODIES[1]), 2, 10) is not None
    assert _plain_rows(json.loads(BODIES[1]), 2, 1) is None  # over max_rows: the full check says so


class Identity(Predictor):
    """A one-output regression 'network' that passes its inputs through."""

    def __init__(self) -> None:
        self.task, self.n_targets, self.classes = "regression", 1, []
        self.mean = self.scale = None
        self.ops = [lambda x: x]


def test_outputs_whose_sum_overflows_are_answered_and_non_finite_rows_named() -> None:
    """The runtime checks finiteness by one sum; a sum past float32 alone is no error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no overflow warning escapes
        big = Identity().predict(np.array([[3e38], [3e38]]))
    assert big["predictions"] == [pytest.approx(3e38, rel=1e-6)] * 2
    with pytest.raises(NotFinite) as caught:
        Identity().predict(np.array([[1.0], [np.inf], [2.0], [np.nan]]))
    assert caught.value.rows == [1, 3]
