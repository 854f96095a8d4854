"""Early stopping and max_seconds, with Keras's rules, on both engines."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from core.datasets import prepare
from core.runtime import Predictor
from core.spec import EarlyStopping, SpecError, parse_spec
from tests.support import overfitting_spec, raw_features
from worker.engines.base import EpochRecord
from worker.engines.stopping import StopPolicy
from worker.jobs import build_artifact


def record(epoch: int, val_loss: float) -> EpochRecord:
    return EpochRecord(epoch, 1.0, None, val_loss, None, 0.01)


def run_policy(rule: EarlyStopping, values: list[float], epochs: int = 100) -> StopPolicy:
    policy = StopPolicy(rule, None, epochs)
    for epoch, value in enumerate(values, start=1):
        if policy.observe(record(epoch, value)).stop:
            break
    return policy


def test_patience_counts_epochs_without_improvement_as_keras_does() -> None:
    values = [1.0, 0.8, 0.9, 0.85, 0.95, 0.7]
    policy = run_policy(EarlyStopping(patience=3), values)
    assert (policy.best_epoch, policy.stopped_epoch, policy.stop_reason) == (2, 5, "early_stopping")
    zero = run_policy(EarlyStopping(patience=0), values)
    assert (zero.best_epoch, zero.stopped_epoch) == (2, 3)


def test_min_delta_and_max_mode() -> None:
    # 0.8 -> 0.79 is not an improvement by more than min_delta 0.05
    policy = run_policy(EarlyStopping(patience=1, min_delta=0.05), [0.8, 0.79, 0.7])
    assert (policy.best_epoch, policy.stopped_epoch) == (1, 2)
    rule = EarlyStopping(monitor="val_accuracy", patience=1)
    policy = StopPolicy(rule, None, 10)
    for epoch, acc in enumerate([0.5, 0.7, 0.6], start=1):
        rec = EpochRecord(epoch, 1.0, None, 1.0, acc, 0.0)
        stopped = policy.observe(rec).stop
    assert stopped and policy.best_epoch == 2


def test_val_monitor_needs_a_validation_split() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(overfitting_spec("numpy", validation_split=0.0))
    assert info.value.details[0]["field"] == "early_stopping.monitor"


def val_loss_of_stored_model(spec_raw: dict[str, Any], train: Any) -> tuple[float, Any]:
    spec = parse_spec(spec_raw)
    data = prepare(spec)
    result = train(spec, data, lambda r: None)
    predictor = Predictor.from_bytes(build_artifact(spec, data, result).to_bytes())
    assert data.X_val is not None and data.T_val is not None
    assert data.scaler_mean is not None and data.scaler_scale is not None
    raw_val = raw_features(data, data.X_val)
    probs = predictor.outputs(raw_val).astype(np.float64)
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(probs)), data.T_val], 1e-7, 1)))
    return float(loss), result


def engines() -> list[Any]:
    from worker.engines.numpy_engine.training import train as numpy_train

    found = [pytest.param(numpy_train, "numpy", id="numpy")]
    try:
        from worker.engines.keras_engine import train as keras_train

        found.append(pytest.param(keras_train, "keras", id="keras"))
    except ImportError:  # pragma: no cover - keras is installed by `make test`
        pass
    return found


@pytest.mark.parametrize(("train", "engine"), engines())
def test_early_stop_restores_the_best_epoch(train: Any, engine: str) -> None:
    stored_loss, result = val_loss_of_stored_model(overfitting_spec(engine), train)
    info = result.info
    assert info["stop_reason"] == "early_stopping"
    assert info["stopped_epoch"] == info["best_epoch"] + 3 < 200
    assert len(result.history) == info["stopped_epoch"]
    best = result.history[info["best_epoch"] - 1]
    assert best.val_loss == min(r.val_loss for r in result.history)
    assert stored_loss == pytest.approx(best.val_loss, rel=1e-4)


@pytest.mark.parametrize(("train", "engine"), engines())
def test_best_weights_are_restored_even_without_an_early_stop(train: Any, engine: str) -> None:
    spec = overfitting_spec(engine, epochs=30)
    spec["early_stopping"]["patience"] = 1000
    stored_loss, result = val_loss_of_stored_model(spec, train)
    info = result.info
    assert info["stop_reason"] == "completed" and info["stopped_epoch"] == 30
    best = result.history[info["best_epoch"] - 1]
    assert info["best_epoch"] < 30  # it overfits: the last epoch is not the best one
    assert stored_loss == pytest.approx(best.val_loss, rel=1e-4)
    assert not math.isclose(stored_loss, result.history[-1].val_loss or 0, rel_tol=1e-3)


@pytest.mark.parametrize(("train", "engine"), engines())
def test_max_seconds_stops_after_the_epoch_that_ran_out(train: Any, engine: str) -> None:
    raw = overfitting_spec(engine, epochs=10_000, max_seconds=1.5)
    del raw["early_stopping"]
    spec = parse_spec(raw)
    result = train(spec, prepare(spec), lambda r: None)
    assert result.info["stop_reason"] == "max_seconds"
    assert 1 <= result.info["stopped_epoch"] == len(result.history) < 10_000
    assert sum(r.seconds for r in result.history) >= 1.0
