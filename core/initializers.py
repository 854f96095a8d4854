"""Kernel initializers with Keras's definitions (variance scaling; truncated normals), by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from core.registry import Registry

# Keras divides the normal's stddev by this so the *truncated* normal has the intended variance.
TRUNCATION_CORRECTION = 0.87962566103423978


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, int], std: float) -> NDArray:
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values * std


def _uniform(scale: float, fan: Callable[[int, int], float]) -> Callable[..., NDArray]:
    def init(rng: np.random.Generator, fan_in: int, fan_out: int) -> NDArray:
        limit = np.sqrt(3.0 * scale / fan(fan_in, fan_out))
        return rng.uniform(-limit, limit, size=(fan_in, fan_out))

    return init


def _normal(scale: float, fan: Callable[[int, int], float]) -> Callable[..., NDArray]:
    def init(rng: np.random.Generator, fan_in: int, fan_out: int) -> NDArray:
        std = np.sqrt(scale / fan(fan_in, fan_out)) / TRUNCATION_CORRECTION
        return _truncated_normal(rng, (fan_in, fan_out), std)

    return init


def _fan_in(fan_in: int, fan_out: int) -> float:
    return float(fan_in)


def _fan_avg(fan_in: int, fan_out: int) -> float:
    return (fan_in + fan_out) / 2.0


Initializer = Callable[[np.random.Generator, int, int], NDArray]

# init(rng, fan_in, fan_out) -> a (fan_in, fan_out) kernel. The Keras engine keys its own
# initializers by the same names.
INITIALIZERS: Registry[Initializer] = Registry(
    "kernel initializer",
    {
        "he_normal": _normal(2.0, _fan_in),
        "he_uniform": _uniform(2.0, _fan_in),
        "glorot_normal": _normal(1.0, _fan_avg),
        "glorot_uniform": _uniform(1.0, _fan_avg),
    },
)

if TYPE_CHECKING:
    InitializerName = str
else:
    InitializerName = Literal[INITIALIZERS.names]
