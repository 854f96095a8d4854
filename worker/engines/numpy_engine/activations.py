"""Activations: each a forward function and its backward side by side, in a registry by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable[[Array], Array]
    # backward(grad wrt output, pre-activation z, output a) -> grad wrt z
    backward: Callable[[Array, Array, Array], Array]


def _relu(z: Array) -> Array:
    return np.maximum(z, 0)


def _relu_backward(g: Array, z: Array, a: Array) -> Array:
    return g * (z > 0)


def _sigmoid(z: Array) -> Array:
    # tanh form: no overflow for large |z|, unlike 1 / (1 + exp(-z)).
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _sigmoid_backward(g: Array, z: Array, a: Array) -> Array:
    return g * a * (1.0 - a)


def _tanh(z: Array) -> Array:
    return np.tanh(z)


def _tanh_backward(g: Array, z: Array, a: Array) -> Array:
    return g * (1.0 - a * a)


def softmax(z: Array) -> Array:
    """Row-wise softmax, max-shifted so exp never overflows."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def _softmax_backward(g: Array, z: Array, a: Array) -> Array:
    return a * (g - (g * a).sum(axis=1, keepdims=True))


def _linear(z: Array) -> Array:
    return z


def _linear_backward(g: Array, z: Array, a: Array) -> Array:
    return g


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("relu", _relu, _relu_backward),
        Activation("sigmoid", _sigmoid, _sigmoid_backward),
        Activation("tanh", _tanh, _tanh_backward),
        Activation("softmax", softmax, _softmax_backward),
        Activation("linear", _linear, _linear_backward),
    )
}
