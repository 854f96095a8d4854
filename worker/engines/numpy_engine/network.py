"""A network of layers, its training loop and its export to the portable artifact."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.spec import BatchNorm as BatchNormSpec
from service.spec import Dense as DenseSpec
from service.spec import JobSpec
from worker.artifact import describe_layers
from worker.engines.base import (
    EngineResult,
    EpochCallback,
    EpochRecord,
    PreparedData,
    check_finite,
)
from worker.engines.numpy_engine.layers import BatchNorm, Dense, Dropout, Layer
from worker.engines.numpy_engine.losses import LOSSES, Loss
from worker.engines.numpy_engine.optimizers import Optimizer, make_optimizer
from worker.engines.stopping import StopPolicy

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
        layer_specs: list[Any],
        n_features: int,
        loss: str,
        rng: np.random.Generator,
        dtype: type = np.float32,
    ) -> Network:
        """Build the layers a spec describes; weights drawn from `rng` in layer order."""
        layers: list[Layer] = []
        width = n_features
        for spec in layer_specs:
            if isinstance(spec, DenseSpec):
                layers.append(
                    Dense(width, spec.units, spec.activation, spec.kernel_initializer, rng, dtype)
                )
                width = spec.units
            elif isinstance(spec, BatchNormSpec):
                layers.append(BatchNorm(width, spec.momentum, spec.epsilon, dtype))
            else:
                layers.append(Dropout(spec.rate, rng))
        return cls(layers, LOSSES[loss])

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

    def param_pairs(self) -> list[tuple[NDArray, NDArray]]:
        """All parameters and their gradients, as one flat pair of arrays."""
        return [(self.flat_params, self.flat_grads)]

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


def _epoch(
    net: Network, optimizer: Optimizer, x: NDArray, t: NDArray, order: NDArray, batch_size: int
) -> tuple[float, float]:
    """One pass over the data in `order`; returns the summed batch losses and accuracies."""
    loss_sum, acc_sum = 0.0, 0.0
    params = net.param_pairs
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        loss, acc = net.train_step(x[idx], t[idx])
        optimizer.apply(params())
        loss_sum += loss * len(idx)
        acc_sum += (acc or 0.0) * len(idx)
    return loss_sum, acc_sum


def fit(
    net: Network,
    optimizer: Optimizer,
    data: PreparedData,
    *,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    on_epoch_end: EpochCallback,
    policy: StopPolicy | None = None,
) -> list[EpochRecord]:
    """Mini-batch training with Keras's reporting: the epoch loss is the mean over its batches.

    With a stop policy, training may end early, and the best epoch's weights are put back at
    the end when the policy says to restore them.
    """
    x, t = data.X_fit, data.T_fit
    n = len(x)
    history = []
    best: dict[str, NDArray] | None = None
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
            loss_sum, acc_sum = _epoch(net, optimizer, x, t, rng.permutation(n), batch_size)
        record = EpochRecord(
            epoch=epoch,
            loss=loss_sum / n,
            accuracy=acc_sum / n if data.task == "classification" else None,
            val_loss=None,
            val_accuracy=None,
            seconds=0.0,
        )
        check_finite(epoch, record.loss)
        if data.X_val is not None and data.T_val is not None:
            record.val_loss, record.val_accuracy = net.evaluate(data.X_val, data.T_val)
        record.seconds = time.perf_counter() - started
        history.append(record)
        if policy is not None and policy.improved(record) and policy.restore_best:
            best = net.arrays()
        on_epoch_end(record)
        if policy is not None and policy.should_stop(record):
            break
    if best is not None:
        net.load_arrays(best)
    return history


def train(spec: JobSpec, data: PreparedData, on_epoch_end: EpochCallback) -> EngineResult:
    """Train `spec` on `data` with the NumPy engine; deterministic for a given seed."""
    rng = np.random.default_rng(spec.seed)
    net = Network.from_spec(list(spec.layers), data.n_features, spec.loss, rng)
    optimizer = make_optimizer(spec.optimizer)
    policy = StopPolicy(spec.early_stopping, spec.max_seconds, spec.epochs)
    history = fit(
        net,
        optimizer,
        data,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        rng=rng,
        on_epoch_end=on_epoch_end,
        policy=policy,
    )
    test_loss, test_accuracy = net.evaluate(data.X_test, data.T_test)
    return EngineResult(
        layers=describe_layers(spec),
        arrays=net.arrays(),
        history=history,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        info=policy.info(),
    )
