"""Layers: each keeps its forward and backward pass side by side, over whole mini-batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core import layers as spec
from core.activations import Bound, bind
from core.initializers import INITIALIZERS
from core.registry import Registry

Array = NDArray


class Layer:
    """A layer's trainable `params` and their `grads` share keys; `state` is not trained."""

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.state: dict[str, Array] = {}

    def forward(self, x: Array, training: bool) -> Array:
        raise NotImplementedError

    def backward(self, g: Array, need_input_grad: bool = True) -> Array | None:
        raise NotImplementedError

    def _grad(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Array:
        """The buffer a gradient is written into (a view of the network's flat gradient)."""
        buffer = self.grads.get(name)
        if buffer is None:
            buffer = self.grads[name] = np.empty(shape, dtype=dtype)
        return buffer


class Dense(Layer):
    def __init__(
        self,
        n_in: int,
        units: int,
        activation: Bound,
        initializer: str,
        rng: np.random.Generator,
        dtype: type = np.float32,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.params["kernel"] = INITIALIZERS.get(initializer)(rng, n_in, units).astype(dtype)
        self.params["bias"] = np.zeros(units, dtype=dtype)
        self._x: Array | None = None
        self.z: Array | None = None
        self.a: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        self._x = x
        z = x @ self.params["kernel"]
        z += self.params["bias"]
        self.z = z
        self.a = self.activation.forward(z)
        return self.a

    def backward(self, g: Array, need_input_grad: bool = True) -> Array | None:
        assert self.z is not None and self.a is not None
        return self.backward_from_z(self.activation.backward(g, self.z, self.a), need_input_grad)

    def backward_from_z(self, gz: Array, need_input_grad: bool = True) -> Array | None:
        """Backward pass given the gradient with respect to the pre-activation."""
        assert self._x is not None
        kernel = self.params["kernel"]
        np.matmul(self._x.T, gz, out=self._grad("kernel", kernel.shape, kernel.dtype))
        gz.sum(axis=0, out=self._grad("bias", self.params["bias"].shape, kernel.dtype))
        return gz @ kernel.T if need_input_grad else None


class BatchNorm(Layer):
    def __init__(self, width: int, momentum: float, epsilon: float, dtype: type = np.float32):
        super().__init__()
        self.momentum = momentum
        self.epsilon = epsilon
        self.params["gamma"] = np.ones(width, dtype=dtype)
        self.params["beta"] = np.zeros(width, dtype=dtype)
        self.state["moving_mean"] = np.zeros(width, dtype=dtype)
        self.state["moving_variance"] = np.ones(width, dtype=dtype)
        self._xhat: Array | None = None
        self._inv_std: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not training:
            inv_std = 1.0 / np.sqrt(self.state["moving_variance"] + self.epsilon)
            return (x - self.state["moving_mean"]) * (inv_std * gamma) + beta
        n = x.shape[0]
        mean = x.sum(axis=0) * (1.0 / n)
        centered = x - mean
        # Biased variance, as Keras uses for both the step and the moving variance.
        var = np.einsum("ij,ij->j", centered, centered) * (1.0 / n)
        self._inv_std = 1.0 / np.sqrt(var + self.epsilon)
        centered *= self._inv_std
        self._xhat = centered
        keep = self.momentum
        self.state["moving_mean"] *= keep
        self.state["moving_mean"] += (1.0 - keep) * mean
        self.state["moving_variance"] *= keep
        self.state["moving_variance"] += (1.0 - keep) * var
        return self._xhat * gamma + beta

    def backward(self, g: Array, need_input_grad: bool = True) -> Array | None:
        xhat, inv_std = self._xhat, self._inv_std
        assert xhat is not None and inv_std is not None
        gamma = self.params["gamma"]
        dgamma = self._grad("gamma", gamma.shape, gamma.dtype)
        dbeta = self._grad("beta", gamma.shape, gamma.dtype)
        np.einsum("ij,ij->j", g, xhat, out=dgamma)
        g.sum(axis=0, out=dbeta)
        if not need_input_grad:
            return None
        n = g.shape[0]
        # d/dx of gamma * xhat + beta, with the batch statistics' own dependence on x:
        # (gamma * inv_std / n) * (n g - sum(g) - xhat * sum(g * xhat)).
        scale = gamma * inv_std * (1.0 / n)
        out = g * n
        out -= dbeta
        out -= xhat * dgamma
        out *= scale
        return out


class Dropout(Layer):
    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        super().__init__()
        self.rate = rate
        self.rng = rng
        self._mask: Array | None = None

    def forward(self, x: Array, training: bool) -> Array:
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        # Inverted dropout: scale the kept units now so inference needs no rescaling.
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.rate
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, g: Array, need_input_grad: bool = True) -> Array | None:
        if not need_input_grad:
            return None
        return g if self._mask is None else g * self._mask


# Builders by layer type: build(spec, input width, rng, dtype) -> a training layer.
Builder = Callable[[Any, int, np.random.Generator, type], Layer]

BUILDERS: Registry[Builder] = Registry(
    "numpy engine layer type",
    {
        "dense": lambda s, width, rng, dtype: Dense(
            width, s.units, bind(s.activation), s.kernel_initializer, rng, dtype
        ),
        "batch_norm": lambda s, width, rng, dtype: BatchNorm(width, s.momentum, s.epsilon, dtype),
        "dropout": lambda s, width, rng, dtype: Dropout(s.rate, rng),
    },
)


def build_layers(
    specs: Sequence[spec.LayerSpec], n_features: int, rng: np.random.Generator, dtype: type
) -> list[Layer]:
    """The training layers a spec's layers describe; weights drawn from `rng` in layer order."""
    layers = []
    width = n_features
    for layer_spec in specs:
        layers.append(BUILDERS.get(layer_spec.type)(layer_spec, width, rng, dtype))
        width = layer_spec.out_width(width)
    return layers
