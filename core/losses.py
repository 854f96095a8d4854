"""Losses: each one registry entry, with Keras's reductions, its target encoding and the output
layer it needs. Cross-entropies work from logits with fused output gradients.

The spec checks the output layer against the entry (`output_units`, `output_activation`,
`n_classes`), the data preparation encodes targets with `encode`, and the NumPy engine trains
with `value` / `gradient` / `accuracy`; the Keras engine keys its own losses by the same names.

Each loss takes the output layer's pre-activation `z` and activation `a` (the spec guarantees a
softmax output for the categorical losses and a sigmoid one for binary cross-entropy), returns
the batch mean, and gives the gradient with respect to `z` directly: for a softmax or sigmoid
output under cross-entropy that is the well-conditioned `(a - target) / n`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from core.activations import Bound
from core.dataset_spec import DataShape
from core.registry import Registry

Array = NDArray
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Loss:
    name: str
    task: Task
    value: Callable[[Array, Array, Array], float]
    # gradient(target, z, a, output activation) -> d loss / d z, for the mean over the batch
    gradient: Callable[[Array, Array, Array, Bound], Array]
    # accuracy(target, a) -> fraction correct, or None for regression
    accuracy: Callable[[Array, Array], float | None]
    # encode(class indices, or float targets of shape (n, k); number of classes) -> targets
    encode: Callable[[Array, int], Array]
    # The output layer it needs: its width for a dataset, and (if any) its activation.
    output_units: Callable[[DataShape], int]
    units_rule: str = ""  # the rule, in words
    output_activation: str | None = None
    n_classes: int | None = None  # a loss made for a fixed number of classes

    def output_problems(
        self, shape: DataShape, units: int, activation: str
    ) -> list[tuple[str, str]]:
        """(`loss`, `units` or `activation`, message) problems of an output layer for `shape`."""
        problems = []
        if self.n_classes is not None and shape.n_classes != self.n_classes:
            problems.append(
                (
                    "loss",
                    f"{self.name} needs {self.n_classes} classes; the dataset has "
                    f"{shape.n_classes}",
                )
            )
        want = self.output_units(shape)
        if units != want:
            problems.append(
                (
                    "units",
                    f"{self.name} needs {want} output unit(s), {self.units_rule}; not {units}",
                )
            )
        if self.output_activation is not None and activation != self.output_activation:
            problems.append(("activation", f"{self.name} needs a {self.output_activation} output"))
        return problems


def _log_softmax(z: Array) -> Array:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _mse(t: Array, z: Array, a: Array) -> float:
    return float(np.mean(np.square(a - t, dtype=np.float64)))


def _mse_grad(t: Array, z: Array, a: Array, act: Bound) -> Array:
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


def _fused_grad(t: Array, z: Array, a: Array, act: Bound) -> Array:
    return (a - t) * (1.0 / len(a))


def _sparse_fused_grad(t: Array, z: Array, a: Array, act: Bound) -> Array:
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


def _float_columns(y: Array, n_classes: int) -> Array:
    y = np.asarray(y, dtype=np.float32)
    return y.reshape(len(y), -1)


def _indices(index: Array, n_classes: int) -> Array:
    return index.astype(np.int64)


def _binary_column(index: Array, n_classes: int) -> Array:
    return index.astype(np.float32).reshape(-1, 1)


def _one_hot(index: Array, n_classes: int) -> Array:
    return np.eye(n_classes, dtype=np.float32)[index]


def _one_per_class(shape: DataShape) -> int:
    return shape.n_classes


LOSSES: Registry[Loss] = Registry(
    "loss",
    (
        Loss(
            "mse",
            "regression",
            _mse,
            _mse_grad,
            _no_accuracy,
            _float_columns,
            output_units=lambda shape: shape.n_targets,
            units_rule="one per target",
        ),
        Loss(
            "binary_crossentropy",
            "classification",
            _bce,
            _fused_grad,
            _binary_accuracy,
            _binary_column,
            output_units=lambda shape: 1,
            units_rule="one sigmoid unit for two classes",
            output_activation="sigmoid",
            n_classes=2,
        ),
        Loss(
            "categorical_crossentropy",
            "classification",
            _cce,
            _fused_grad,
            _categorical_accuracy,
            _one_hot,
            output_units=_one_per_class,
            units_rule="one per class",
            output_activation="softmax",
        ),
        Loss(
            "sparse_categorical_crossentropy",
            "classification",
            _sparse_cce,
            _sparse_fused_grad,
            _sparse_accuracy,
            _indices,
            output_units=_one_per_class,
            units_rule="one per class",
            output_activation="softmax",
        ),
    ),
    name=lambda loss: loss.name,
)

if TYPE_CHECKING:
    LossName = str
else:
    LossName = Literal[LOSSES.names]
