"""Losses with Keras's reductions; cross-entropies work from logits with fused output gradients.

Each loss takes the output layer's pre-activation `z` and activation `a` (the spec guarantees a
softmax output for the categorical losses and a sigmoid one for binary cross-entropy), returns
the batch mean, and gives the gradient with respect to `z` directly: for a softmax or sigmoid
output under cross-entropy that is the well-conditioned `(a - target) / n`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from worker.engines.numpy_engine.activations import Activation

Array = NDArray


@dataclass(frozen=True)
class Loss:
    name: str
    value: Callable[[Array, Array, Array], float]
    # gradient(target, z, a, output activation) -> d loss / d z, for the mean over the batch
    gradient: Callable[[Array, Array, Array, Activation], Array]
    # accuracy(target, a) -> fraction correct, or None for regression
    accuracy: Callable[[Array, Array], float | None]


def _log_softmax(z: Array) -> Array:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _mse(t: Array, z: Array, a: Array) -> float:
    return float(np.mean(np.square(a - t, dtype=np.float64)))


def _mse_grad(t: Array, z: Array, a: Array, act: Activation) -> Array:
    return act.backward((2.0 / a.size) * (a - t), z, a)


def _bce(t: Array, z: Array, a: Array) -> float:
    # log(1 + exp(-|z|)) + max(z, 0) - z t: the logits form, finite for any z.
    z64 = z.astype(np.float64)
    return float(np.mean(np.maximum(z64, 0) - z64 * t + np.log1p(np.exp(-np.abs(z64)))))


def _cce(t: Array, z: Array, a: Array) -> float:
    return float(-np.mean((t * _log_softmax(z.astype(np.float64))).sum(axis=1)))


def _sparse_cce(t: Array, z: Array, a: Array) -> float:
    logp = _log_softmax(z.astype(np.float64))
    return float(-np.mean(logp[np.arange(len(t)), t]))


def _fused_grad(t: Array, z: Array, a: Array, act: Activation) -> Array:
    return (a - t) * (1.0 / len(a))


def _sparse_fused_grad(t: Array, z: Array, a: Array, act: Activation) -> Array:
    g = a.copy()
    g[np.arange(len(t)), t] -= 1.0
    g *= 1.0 / len(a)
    return g


def _binary_accuracy(t: Array, a: Array) -> float:
    return float(np.mean((a > 0.5) == (t > 0.5)))


def _categorical_accuracy(t: Array, a: Array) -> float:
    return float(np.mean(a.argmax(axis=1) == t.argmax(axis=1)))


def _sparse_accuracy(t: Array, a: Array) -> float:
    return float(np.mean(a.argmax(axis=1) == t))


def _no_accuracy(t: Array, a: Array) -> None:
    return None


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", _mse, _mse_grad, _no_accuracy),
        Loss("binary_crossentropy", _bce, _fused_grad, _binary_accuracy),
        Loss("categorical_crossentropy", _cce, _fused_grad, _categorical_accuracy),
        Loss("sparse_categorical_crossentropy", _sparse_cce, _sparse_fused_grad, _sparse_accuracy),
    )
}
