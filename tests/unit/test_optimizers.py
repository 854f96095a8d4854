"""Each optimizer's first steps against values worked out by hand from Keras 3's update rules."""

from __future__ import annotations

import numpy as np
import pytest

from core.optimizers import SGD, Adam, RMSprop
from worker.engines.numpy_engine.optimizers import make_optimizer


def run(spec: SGD | RMSprop | Adam, grads: list[float], start: float = 1.0) -> list[float]:
    param, grad = np.array([start], dtype=np.float64), np.zeros(1)
    optimizer = make_optimizer(spec, param, grad)
    seen = []
    for g in grads:
        grad[0] = g
        optimizer.step()
        seen.append(float(param[0]))
    return seen


def test_sgd_plain() -> None:
    # p -= lr * g: 1 - 0.1 * 0.5 = 0.95, then 0.95 - 0.1 * 0.25 = 0.925
    assert run(SGD(type="sgd", learning_rate=0.1), [0.5, 0.25]) == pytest.approx([0.95, 0.925])


def test_sgd_default_learning_rate_is_keras_0_01() -> None:
    assert run(SGD(type="sgd"), [1.0]) == pytest.approx([0.99])


def test_sgd_momentum() -> None:
    # m1 = -0.1*0.5 = -0.05 -> p = 0.95; m2 = 0.9*-0.05 - 0.05 = -0.095 -> p = 0.855
    spec = SGD(type="sgd", learning_rate=0.1, momentum=0.9)
    assert run(spec, [0.5, 0.5]) == pytest.approx([0.95, 0.855])


def test_sgd_nesterov() -> None:
    # m1 = -0.05; p += 0.9*m1 - 0.1*0.5 = -0.095 -> 0.905
    # m2 = 0.9*-0.05 - 0.05 = -0.095; p += 0.9*-0.095 - 0.05 = -0.1355 -> 0.7695
    spec = SGD(type="sgd", learning_rate=0.1, momentum=0.9, nesterov=True)
    assert run(spec, [0.5, 0.5]) == pytest.approx([0.905, 0.7695])


def test_rmsprop() -> None:
    # v1 = 0.1 * 0.25 = 0.025; step = 0.01 * 0.5 / sqrt(0.025 + 1e-7) = 0.0316227134
    # v2 = 0.9 * 0.025 + 0.1 * 0.25 = 0.0475; step = 0.005 / sqrt(0.0475001) = 0.0229415491
    spec = RMSprop(type="rmsprop", learning_rate=0.01)
    assert run(spec, [0.5, 0.5]) == pytest.approx([0.9683772866, 0.9454357375], abs=1e-9)


def test_adam() -> None:
    # t=1: m = 0.05, v = 0.00025, alpha = 0.001 * sqrt(0.001) / 0.1 = 3.16227766e-4
    #      step = alpha * 0.05 / (0.0158113883 + 1e-7) = 9.99993675e-4
    # t=2: m = 0.095, v = 0.00049975, alpha = 0.001 * sqrt(0.001999) / 0.19 = 2.35319e-4
    #      step = alpha * 0.095 / (sqrt(0.00049975) + 1e-7) = 9.99995527e-4
    spec = Adam(type="adam")
    assert run(spec, [0.5, 0.5]) == pytest.approx([0.999000006325, 0.998000010798], abs=1e-11)


def test_adam_keeps_state_per_parameter() -> None:
    params, grads = np.array([1.0, 1.0]), np.array([1.0, -1.0])
    make_optimizer(Adam(type="adam", learning_rate=0.1), params, grads).step()
    assert params == pytest.approx([0.9, 1.1], abs=1e-6)


def test_optimizers_keep_float32_parameters_float32() -> None:
    for spec in (SGD(type="sgd", momentum=0.9), RMSprop(type="rmsprop"), Adam(type="adam")):
        param = np.ones(3, dtype=np.float32)
        make_optimizer(spec, param, np.full(3, 0.5, dtype=np.float32)).step()
        assert param.dtype == np.float32
