"""The NumPy engine end to end in-process: determinism, accuracy, divergence, data handling."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from core.datasets import prepare
from core.runtime import Predictor
from core.spec import JobSpec, parse_spec
from tests.support import SEED_SPEC, diverging_spec, raw_features
from worker.engines.base import Diverged, EpochRecord
from worker.engines.numpy_engine.network import Network
from worker.engines.numpy_engine.optimizers import make_optimizer
from worker.engines.numpy_engine.training import fit, train
from worker.jobs import build_artifact


def spec_with(**changes: Any) -> JobSpec:
    raw = copy.deepcopy(SEED_SPEC)
    raw.update(changes)
    return parse_spec(raw)


def test_same_spec_and_seed_give_identical_weights() -> None:
    spec = spec_with(epochs=3)
    first = train(spec, prepare(spec), lambda r: None)
    second = train(spec, prepare(spec), lambda r: None)
    assert first.arrays.keys() == second.arrays.keys()
    for name in first.arrays:
        assert np.array_equal(first.arrays[name], second.arrays[name]), name
    other = train(spec_with(epochs=3, seed=1), prepare(spec), lambda r: None)
    assert not np.array_equal(first.arrays["layers.0.kernel"], other.arrays["layers.0.kernel"])


def test_seed_job_learns_and_reports_every_epoch() -> None:
    spec = spec_with()
    records: list[EpochRecord] = []
    result = train(spec, prepare(spec), records.append)
    assert [r.epoch for r in records] == list(range(1, 51))
    assert records[-1].loss < records[0].loss
    assert all(r.val_loss is not None and r.seconds > 0 for r in records)
    assert result.test_accuracy is not None and result.test_accuracy >= 0.65
    assert all(a.dtype == np.float32 for a in result.arrays.values())


def test_runtime_matches_the_engine_on_test_rows() -> None:
    spec = spec_with(epochs=5)
    data = prepare(spec)
    rng = np.random.default_rng(spec.seed)
    net = Network.from_spec(spec.layers, data.n_features, spec.loss, rng)
    fit(
        net,
        make_optimizer(spec.optimizer, net.flat_params, net.flat_grads),
        data,
        epochs=5,
        batch_size=32,
        rng=rng,
        on_epoch_end=lambda r: None,
    )
    result = train(spec, data, lambda r: None)
    artifact = build_artifact(spec, data, result)
    predictor = Predictor.from_bytes(artifact.to_bytes())
    engine_out = net.predict(data.X_test)
    # The runtime takes raw features and applies the stored scaler itself.
    assert data.scaler_mean is not None and data.scaler_scale is not None
    raw = raw_features(data, data.X_test)
    np.testing.assert_allclose(predictor.outputs(raw), engine_out, atol=1e-5)


def test_divergence_raises_with_the_epoch() -> None:
    spec = parse_spec(diverging_spec())
    with pytest.raises(Diverged) as info:
        train(spec, prepare(spec), lambda r: None)
    assert info.value.epoch <= 100
    assert "learning rate" in str(info.value)


def test_validation_split_takes_the_last_rows_and_scaler_fits_training_rows_only() -> None:
    spec = spec_with(epochs=1)
    data = prepare(spec)
    assert data.X_val is not None
    assert (len(data.X_fit), len(data.X_val), len(data.X_test)) == (640, 160, 200)
    # Standardized on the 640 fitted rows: those have mean 0 and std 1, the others do not.
    np.testing.assert_allclose(data.X_fit.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(data.X_fit.std(axis=0), 1, atol=1e-4)
    assert abs(data.X_val.mean()) > 1e-4


def test_string_labels_round_trip_through_the_artifact() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 2))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no").tolist()
    spec = parse_spec(
        {
            "dataset": {"inline": {"X": X.tolist(), "y": y}},
            "layers": [
                {"type": "dense", "units": 8, "activation": "tanh"},
                {"type": "dense", "units": 1, "activation": "sigmoid"},
            ],
            "loss": "binary_crossentropy",
            "optimizer": {"type": "adam", "learning_rate": 0.05},
            "epochs": 30,
            "preprocessing": {"standardize": True},
        }
    )
    data = prepare(spec)
    assert data.classes == ["no", "yes"]
    result = train(spec, data, lambda r: None)
    predictor = Predictor.from_bytes(build_artifact(spec, data, result).to_bytes())
    answer = predictor.predict(np.array([[2.0, 2.0], [-2.0, -2.0]]))
    assert answer["predictions"] == ["yes", "no"]
    assert np.allclose(np.sum(answer["probabilities"], axis=1), 1.0)


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_categorical_losses_train_on_iris(loss: str) -> None:
    spec = parse_spec(
        {
            "dataset": {"builtin": "iris"},
            "preprocessing": {"standardize": True},
            "layers": [
                {"type": "dense", "units": 16, "activation": "relu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
            "loss": loss,
            "optimizer": {"type": "adam", "learning_rate": 0.02},
            "epochs": 40,
            "batch_size": 16,
        }
    )
    result = train(spec, prepare(spec), lambda r: None)
    assert result.test_accuracy is not None and result.test_accuracy >= 0.85


def test_regression_predictions_are_plain_numbers() -> None:
    spec = parse_spec(
        {
            "dataset": {"builtin": "diabetes"},
            "preprocessing": {"standardize": True},
            "layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dense", "units": 1},
            ],
            "loss": "mse",
            "optimizer": "adam",
            "epochs": 2,
        }
    )
    data = prepare(spec)
    result = train(spec, data, lambda r: None)
    assert result.test_accuracy is None
    predictor = Predictor.from_bytes(build_artifact(spec, data, result).to_bytes())
    answer = predictor.predict(np.zeros((2, 10)))
    assert set(answer) == {"predictions"} and isinstance(answer["predictions"][0], float)
