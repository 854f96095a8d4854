"""The predict body's quick read (no pydantic for an ordinary body) accepts exactly what the
pydantic model accepts, and gives the same rows."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from core import runtime
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
    """A 'network' that passes its inputs through (a one-output regression unless told)."""

    def __init__(self, task: str = "regression", n_targets: int = 1, classes: Any = ()) -> None:
        self.task, self.n_targets, self.classes = task, n_targets, list(classes)
        self.mean = self.scale = None
        self.ops = [lambda x: x]


@pytest.mark.parametrize(
    ("predictor", "width"),
    [
        (Identity("classification", classes=["a", "b", "c"]), 3),
        (Identity("classification", classes=[0, 1]), 1),  # one sigmoid unit
        (Identity(), 1),
        (Identity(n_targets=2), 2),
    ],
    ids=["softmax", "sigmoid", "regression", "two targets"],
)
def test_small_answers_in_python_equal_the_numpy_answers(
    predictor: Predictor, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few rows are answered from Python lists, more through NumPy: the same answer, ties to
    the first highest class, the same non-finite rows named."""
    rng = np.random.default_rng(0)
    X = rng.random((6, width)).astype(np.float32)
    X[2] = X[2, :1]  # a tie: every output of the row equal
    rejected = X.copy()
    rejected[[1, 4], 0] = [np.inf, np.nan]

    def answers(limit: int) -> tuple[dict[str, Any], list[int]]:
        monkeypatch.setattr(runtime, "SMALL_ANSWER", limit)
        with pytest.raises(NotFinite) as caught:
            predictor.predict(rejected)
        return predictor.predict(X), caught.value.rows

    in_python, in_numpy = answers(10**6), answers(0)
    assert in_python == in_numpy
    assert json.dumps(in_python[0]) == json.dumps(in_numpy[0])  # the same floats, exactly
    assert in_python[1] == [1, 4]


def test_outputs_whose_sum_overflows_are_answered_and_non_finite_rows_named() -> None:
    """The runtime checks finiteness by one sum; a sum past float32 alone is no error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no overflow warning escapes
        big = Identity().predict(np.full((2 * runtime.SMALL_ANSWER, 1), 3e38))
        assert Identity().predict(np.array([[3e38], [3e38]])) == {
            "predictions": [big["predictions"][0]] * 2
        }
    assert big["predictions"] == [pytest.approx(3e38, rel=1e-6)] * 2 * runtime.SMALL_ANSWER
    with pytest.raises(NotFinite) as caught:
        Identity().predict(np.array([[1.0], [np.inf], [2.0], [np.nan]]))
    assert caught.value.rows == [1, 3]
