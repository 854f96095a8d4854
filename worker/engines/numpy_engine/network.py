"""A network of layers: forward, backward, evaluation, and its arrays under the artifact's names."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from core.layers import LayerSpec
from core.losses import LOSSES, Loss
from worker.engines.numpy_engine.layers import Dense, Layer, build_layers

EVAL_CHUNK = 8192


class Network:
    def __init__(self, layers: list[Layer], loss: Loss) -> None:
        self.layers = layers
        self.loss = loss
        last = layers[-1]
        assert isinstance(last, Dense), "the output layer must be dense"
        self.output: Dense = last
        self.flat_params, self.flat_grads = self._flatten()

    def _flatten(self) -> tuple[NDArray, NDArray]:
        """Keep every parameter (and gradient) as a view into one flat array.

        The optimizer then updates all of them with a handful of vectorized operations per
        step instead of a handful per parameter array: on small networks that is most of the
        time a step takes.
        """
        names = [(layer, name) for layer in self.layers for name in layer.params]
        dtype = names[0][0].params[names[0][1]].dtype
        total = sum(layer.params[name].size for layer, name in names)
        params, grads = np.empty(total, dtype=dtype), np.zeros(total, dtype=dtype)
        offset = 0
        for layer, name in names:
            value = layer.params[name]
            end = offset + value.size
            view = params[offset:end].reshape(value.shape)
            view[...] = value
            layer.params[name] = view
            layer.grads[name] = grads[offset:end].reshape(value.shape)
            offset = end
        return params, grads

    @classmethod
    def from_spec(
        cls,
        layer_specs: Sequence[LayerSpec],
        n_features: int,
        loss: str,
        rng: np.random.Generator,
        dtype: type = np.float32,
    ) -> Network:
        """Build the layers a spec describes; weights drawn from `rng` in layer order."""
        return cls(build_layers(layer_specs, n_features, rng, dtype), LOSSES.get(loss))

    def forward(self, x: NDArray, training: bool) -> NDArray:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def train_step(self, x: NDArray, t: NDArray) -> tuple[float, float | None]:
        """Forward and backward on one batch; fills each layer's grads. Returns loss, accuracy."""
        a = self.forward(x, training=True)
        out = self.output
        assert out.z is not None
        loss = self.loss.value(t, out.z, a)
        accuracy = self.loss.accuracy(t, a)
        g = self.loss.gradient(t, out.z, a, out.activation)
        grad: NDArray | None = out.backward_from_z(g, need_input_grad=len(self.layers) > 1)
        for i in range(len(self.layers) - 2, -1, -1):
            assert grad is not None
            grad = self.layers[i].backward(grad, need_input_grad=i > 0)
        return loss, accuracy

    def evaluate(self, x: NDArray, t: NDArray) -> tuple[float, float | None]:
        """Loss and accuracy in inference mode, averaged over all rows."""
        total_loss, total_acc, n = 0.0, 0.0, len(x)
        has_acc = True
        for start in range(0, n, EVAL_CHUNK):
            xb, tb = x[start : start + EVAL_CHUNK], t[start : start + EVAL_CHUNK]
            a = self.forward(xb, training=False)
            assert self.output.z is not None
            total_loss += self.loss.value(tb, self.output.z, a) * len(xb)
            acc = self.loss.accuracy(tb, a)
            if acc is None:
                has_acc = False
            else:
                total_acc += acc * len(xb)
        return total_loss / n, (total_acc / n if has_acc else None)

    def predict(self, x: NDArray) -> NDArray:
        return np.concatenate(
            [
                self.forward(x[s : s + EVAL_CHUNK], training=False)
                for s in range(0, len(x), EVAL_CHUNK)
            ]
        )

    def arrays(self) -> dict[str, NDArray]:
        """Every weight and statistic, named `layers.<index>.<name>` as the artifact stores it."""
        out = {}
        for i, layer in enumerate(self.layers):
            for name, value in (*layer.params.items(), *layer.state.items()):
                out[f"layers.{i}.{name}"] = value.copy()
        return out

    def load_arrays(self, arrays: dict[str, NDArray]) -> None:
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.state):
                for name in store:
                    store[name][...] = arrays[f"layers.{i}.{name}"]
