"""The NumPy engine's training loop: mini-batches, per-epoch records, the stop policy."""

from __future__ import annotations

import time

import numpy as np
from numpy.typing import NDArray

from core.artifact import describe_layers
from core.datasets import PreparedData
from core.spec import JobSpec
from worker.engines.base import (
    Check,
    EngineResult,
    EpochCallback,
    EpochRecord,
    check_finite,
    no_check,
)
from worker.engines.numpy_engine.network import Network
from worker.engines.numpy_engine.optimizers import Optimizer, make_optimizer
from worker.engines.stopping import StopPolicy


def _epoch(
    net: Network,
    optimizer: Optimizer,
    x: NDArray,
    t: NDArray,
    order: NDArray,
    batch_size: int,
    check: Check,
) -> tuple[float, float]:
    """One pass over the data in `order`; returns the summed batch losses and accuracies."""
    loss_sum, acc_sum = 0.0, 0.0
    for start in range(0, len(order), batch_size):
        check()
        idx = order[start : start + batch_size]
        loss, acc = net.train_step(x[idx], t[idx])
        optimizer.step()
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
    check: Check = no_check,
) -> list[EpochRecord]:
    """Mini-batch training with Keras's reporting: the epoch loss is the mean over its batches.

    With a stop policy, training may end early, and the best epoch's weights are put back at
    the end when the policy says to restore them.
    """
    policy = policy or StopPolicy(None, None, epochs)
    x, t = data.X_fit, data.T_fit
    n = len(x)
    history = []
    best: dict[str, NDArray] | None = None
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is checked below
            loss_sum, acc_sum = _epoch(net, optimizer, x, t, rng.permutation(n), batch_size, check)
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
        verdict = policy.observe(record)
        if verdict.best and policy.restore_best:
            best = net.arrays()
        on_epoch_end(record)
        if verdict.stop:
            break
    if best is not None:
        net.load_arrays(best)
    return history


def train(
    spec: JobSpec, data: PreparedData, on_epoch_end: EpochCallback, check: Check = no_check
) -> EngineResult:
    """Train `spec` on `data` with the NumPy engine; deterministic for a given seed."""
    rng = np.random.default_rng(spec.seed)
    net = Network.from_spec(spec.layers, data.n_features, spec.loss, rng)
    optimizer = make_optimizer(spec.optimizer, net.flat_params, net.flat_grads)
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
        check=check,
    )
    test_loss, test_accuracy = net.evaluate(data.X_test, data.T_test)
    return EngineResult(
        layers=describe_layers(spec.layers),
        arrays=net.arrays(),
        history=history,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        info=policy.info(),
    )
