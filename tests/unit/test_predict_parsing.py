"""The predict body's quick read (no pydantic for an ordinary body) accepts exactly what the
pydantic model accepts, and gives the same rows."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from core import runtime
from core.activations import ACTIVATIONS
from core.artifact import Artifact
from core.datasets import prepare
from core.runtime import NotFinite, Predictor
from core.spec import parse_spec
from service.predictions import PredictRequest, _plain_rows
from worker.engines.numpy_engine.training import train as numpy_train
from worker.jobs import build_artifact

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
    assert np.array_equal(np.asarray(quick, dtype=np.float64), expected)  # the same numbers


def test_quick_read_takes_the_ordinary_bodies_and_the_row_limit() -> None:
    assert _plain_rows(json.loads(BODIES[0]), 2, 10) is not None
    assert _plain_rows(json.loads(BODIES[1]), 2, 10) is not None
    assert _plain_rows(json.loads(BODIES[1]), 2, 1) is None  # over max_rows: the full check says so


class Identity(Predictor):
    """A 'network' that passes its inputs through (a one-output regression unless told), its
    rows through NumPy (`_predict_few` is for real models, tested below)."""

    def __init__(self, task: str = "regression", n_targets: int = 1, classes: Any = ()) -> None:
        self.task, self.n_targets, self.classes = task, n_targets, list(classes)
        self.mean = self.scale = self._shift = self._divide = self.finish = None
        self.ops = [lambda x: x]
        self.quiet_limit, self.few_rows = 0.0, 0


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


# -- a few rows in Python (Predictor._predict_few) against many through NumPy ------------------

OUTPUT_LAYERS = {  # loss: (output activation, units, dataset, its parameters)
    "sparse_categorical_crossentropy": (
        "softmax",
        3,
        "make_classification",
        {"n_classes": 3, "n_redundant": 0},
    ),
    "binary_crossentropy": ("sigmoid", 1, "make_classification", {"n_redundant": 0}),
    "mse": ("linear", 1, "make_regression", {}),
    "mse, two targets": ("linear", 2, "make_regression", {"n_targets": 2}),
}


SMALL_REGRESSION = {
    "dataset": {"builtin": "make_regression", "params": {"n_samples": 60, "n_features": 5}},
    "preprocessing": {"standardize": True},
    "layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "units": 1}],
    "loss": "mse",
    "epochs": 1,
}


def trained_predictor(loss: str, hidden: str = "relu", standardize: bool = True) -> Predictor:
    """A small network of the numpy engine, trained two epochs, loaded as the API loads it."""
    activation, units, dataset, params = OUTPUT_LAYERS[loss]
    spec = parse_spec(
        {
            "dataset": {
                "builtin": dataset,
                "params": {"n_samples": 120, "n_features": 5, "n_informative": 4, **params},
            },
            "preprocessing": {"standardize": standardize},
            "layers": [
                {"type": "dense", "units": 8, "activation": hidden},
                {"type": "batch_norm"},
                {"type": "dense", "units": 6, "activation": hidden},
                {"type": "dense", "units": units, "activation": activation},
            ],
            "loss": loss.split(",")[0],
            "epochs": 2,
            "batch_size": 16,
            "seed": 3,
        }
    )
    return Predictor(trained_artifact(spec))


def trained_artifact(spec: Any) -> Artifact:
    data = prepare(spec)
    result = numpy_train(spec, data, lambda record: None)
    return Artifact.from_bytes(build_artifact(spec, data, result).to_bytes())


def through_numpy(predictor: Predictor, rows: list[list[float]]) -> dict[str, Any]:
    """The answer for `rows` as many rows get it: NumPy from the inputs to the answer."""
    few_rows, small = predictor.few_rows, runtime.SMALL_ANSWER
    predictor.few_rows, runtime.SMALL_ANSWER = 0, 0
    try:
        return predictor.predict(np.asarray(rows))
    finally:
        predictor.few_rows, runtime.SMALL_ANSWER = few_rows, small


def answers_alike(few: dict[str, Any], many: dict[str, Any], rel: float = 1e-13) -> None:
    """The same predictions; probabilities equal to `rel` (the last bits of float64: Python's
    exp and NumPy's may round differently)."""
    assert few["predictions"] == many["predictions"]
    if "probabilities" in few:
        assert few["probabilities"] == [
            pytest.approx(row, rel=rel, abs=1e-300) for row in many["probabilities"]
        ]


@pytest.mark.parametrize("standardize", [True, False], ids=["standardized", "raw"])
@pytest.mark.parametrize("loss", list(OUTPUT_LAYERS))
def test_a_few_rows_in_python_answer_as_numpy_does(loss: str, standardize: bool) -> None:
    """The same rows answer alike in Python and through NumPy (integers as JSON gives them count
    as the same floats); a model without a float64 output activation answers the very same."""
    predictor = trained_predictor(loss, standardize=standardize)
    rng = np.random.default_rng(1)
    rows = (rng.standard_normal((3, 5)) * 3).round(3).tolist()
    rows[1][2] = 7  # an integer
    assert predictor.few_rows >= 3
    answers_alike(predictor.predict(rows), through_numpy(predictor, rows))
    for row in rows:
        answers_alike(predictor.predict([row]), through_numpy(predictor, [row]))
    if OUTPUT_LAYERS[loss][0] == "linear":
        assert json.dumps(predictor.predict(rows)) == json.dumps(through_numpy(predictor, rows))
    # Alone or in a batch of 120, a row's float32 network may differ in its last bits (BLAS
    # picks other kernels for a few rows), no more.
    many = predictor.predict(np.asarray(rows * 40))
    few = predictor.predict(rows)
    for key, values in few.items():
        if key == "probabilities" or OUTPUT_LAYERS[loss][0] == "linear":
            np.testing.assert_allclose(values, many[key][:3], rtol=1e-5)
        else:
            assert values == many[key][:3]


@pytest.mark.parametrize("hidden", [name for name in ACTIVATIONS.names if name != "softmax"])
def test_every_hidden_activation_answers_alike_in_python_and_numpy(hidden: str) -> None:
    predictor = trained_predictor("sparse_categorical_crossentropy", hidden)
    rows = np.random.default_rng(2).standard_normal((2, 5)).tolist()
    answers_alike(predictor.predict(rows), through_numpy(predictor, rows))


def test_a_few_rows_under_the_quiet_limit_skip_the_floating_point_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inputs under `quiet_limit` cannot overflow anywhere in the network: they run without
    np.errstate and answer finite numbers; inputs beyond it run with it, and no warning escapes
    either way while the rows that overflow are named."""
    predictor = trained_predictor("sparse_categorical_crossentropy", standardize=False)
    assert 1e20 < predictor.quiet_limit < math.inf
    edge = predictor.quiet_limit / 10 * 0.999  # two rows of five: the sum of |inputs| just under
    signs = np.random.default_rng(3).choice([-1.0, 1.0], (40, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rows in (signs * edge).reshape(20, 2, 5).tolist():
            with monkeypatch.context() as patched:
                patched.setattr(runtime.np, "errstate", None)  # any use would fail
                answer = predictor.predict(rows)
            assert np.isfinite(answer["probabilities"]).all()
        with pytest.raises(NotFinite) as caught:
            predictor.predict([[1.0] * 5, [1e39] * 5, [2.0] * 5, [-1e300] * 5])  # beyond float32
    assert caught.value.rows == [1, 3]


def test_a_model_whose_scaler_divides_by_zero_is_served_through_numpy() -> None:
    """Python would raise on a zero scale where NumPy divides: such an artifact (ours never
    store one) keeps to the NumPy path."""
    artifact = trained_artifact(parse_spec(SMALL_REGRESSION))
    artifact.arrays["scaler.scale"][1] = 0.0
    predictor = Predictor(artifact)
    assert predictor.few_rows == 0
    with np.errstate(divide="ignore"), contextlib.suppress(NotFinite):  # not ZeroDivisionError
        predictor.predict([[0.5, 0.0, 1.0, 2.0, 3.0]])


def test_no_rows_answer_no_predictions() -> None:
    predictor = trained_predictor("sparse_categorical_crossentropy")
    assert predictor.predict(np.empty((0, 5))) == {"predictions": [], "probabilities": []}
