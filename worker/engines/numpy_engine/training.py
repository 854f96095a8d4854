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
    Snapshot,
    Start,
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
    start: Start | None = None,
) -> list[EpochRecord]:
    """Mini-batch training with Keras's reporting: the epoch loss is the mean over its batches.

    With a stop policy, training may end early, and the best epoch's weights are put back at
    the end when the policy says to restore them. With a checkpoint to resume from, training
    takes up after its epoch exactly as if it had never stopped (same weights, optimizer state,
    random stream and policy), and stores checkpoints whenever `start.checkpoints` says so.
    """
    policy = policy or StopPolicy(None, None, epochs)
    start = start or Start()
    x, t = data.X_fit, data.T_fit
    n = len(x)
    history = list(start.history)
    best: dict[str, NDArray] | None = None
    if start.resume is not None:
        best = _restore(start.resume, net, optimizer, rng, policy)
    for epoch in range(start.first_epoch, epochs + 1):
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
        if epoch < epochs and start.checkpoints.due():
            start.checkpoints.save(_snapshot(epoch, net, optimizer, rng, policy, best))
    if best is not None:
        net.load_arrays(best)
    return history


BEST = "best."  # prefix of the best epoch's weights in a snapshot


def _snapshot(
    epoch: int,
    net: Network,
    optimizer: Optimizer,
    rng: np.random.Generator,
    policy: StopPolicy,
    best: dict[str, NDArray] | None,
) -> Snapshot:
    arrays = {**net.arrays(), **optimizer.slots()}
    if best is not None:
        arrays.update({BEST + name: value for name, value in best.items()})
    state = {
        "engine": "numpy",
        "rng": rng.bit_generator.state,
        "iterations": optimizer.iterations,
        "policy": policy.state(),
    }
    return Snapshot(epoch, arrays, state)


def _restore(
    snapshot: Snapshot,
    net: Network,
    optimizer: Optimizer,
    rng: np.random.Generator,
    policy: StopPolicy,
) -> dict[str, NDArray] | None:
    """Put the network, optimizer, random stream and policy back as `_snapshot` found them;
    returns the best epoch's weights if they were kept."""
    net.load_arrays(snapshot.arrays)
    optimizer.load_slots(snapshot.arrays, int(snapshot.state["iterations"]))
    rng.bit_generator.state = snapshot.state["rng"]
    policy.restore(snapshot.state["policy"])
    best = {
        name.removeprefix(BEST): value
        for name, value in snapshot.arrays.items()
        if name.startswith(BEST)
    }
    return best or None


def load_initial(net: Network, arrays: dict[str, NDArray]) -> None:
    """Warm start: the network's weights and statistics from a finished model's artifact."""
    net.load_arrays({name: value for name, value in arrays.items() if name.startswith("layers.")})


def train(
    spec: JobSpec,
    data: PreparedData,
    on_epoch_end: EpochCallback,
    check: Check = no_check,
    start: Start | None = None,
) -> EngineResult:
    """Train `spec` on `data` with the NumPy engine; deterministic for a given seed, resumed or
    not."""
    rng = np.random.default_rng(spec.seed)
    net = Network.from_spec(spec.layers, data.n_features, spec.loss, rng)
    if start is not None and start.init is not None:
        load_initial(net, start.init)
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
        start=start,
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
