"""The Keras 3 engine (TensorFlow back end), built from the same spec as the NumPy engine.

TensorFlow is imported inside these functions only, never at module import: it is not
fork-safe, so it must first load inside the worker's pool process, after the fork.

Where the two engines could differ, they are made to agree:
- batch normalization: both keep `moving = moving * momentum + batch * (1 - momentum)` with the
  biased batch variance, and Keras's defaults (momentum 0.99, epsilon 1e-3);
- Adam: both add epsilon outside the square root of the bias-corrected second moment
  ("epsilon hat"), RMSprop inside it, as Keras 3 does;
- validation: the split is made once, before either engine sees the data (the last fraction of
  the training rows, as Keras's `validation_split`), and Keras gets it as `validation_data`;
- early stopping and `max_seconds` are one shared policy (`stopping.StopPolicy`), and the best
  weights are restored whenever `restore_best_weights` is set, even without an early stop.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.activations import ActivationSpec
from core.artifact import describe_layers
from core.datasets import PreparedData
from core.layers import LayerSpec
from core.optimizers import OptimizerSpec
from core.registry import Registry
from core.spec import JobSpec
from worker.engines.base import (
    Check,
    Diverged,
    EngineResult,
    EpochCallback,
    EpochRecord,
    Snapshot,
    Start,
    no_check,
)
from worker.engines.stopping import StopPolicy

# Activations Keras knows by the same name and takes without parameters.
SAME_NAME_ACTIVATIONS = (
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "linear",
    "elu",
    "selu",
    "gelu",
    "softplus",
    "swish",
)


def _by_name(name: str) -> Callable[[Any, ActivationSpec], str]:
    return lambda keras, spec: name


_threads = 0


def configure(threads: int) -> None:
    """Threads TensorFlow may use in this process (TF_NUM_THREADS); set before the first job."""
    global _threads
    _threads = threads


def _keras() -> Any:
    """Import Keras on the TensorFlow back end, with thread counts set before TF starts."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    threads = _threads  # 0: TensorFlow picks
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already started in this process; the first job's setting stands
    import keras

    return keras


# Builders keyed by the names core/ declares; each takes the spec entry and returns what Keras
# takes. A name with no builder here raises UnknownKind when a job uses it.
ACTIVATIONS: Registry[Callable[[Any, ActivationSpec], Any]] = Registry(
    "keras engine activation",
    {
        **{name: _by_name(name) for name in SAME_NAME_ACTIVATIONS},
        "leaky_relu": lambda k, a: partial(k.activations.leaky_relu, **a.params()),
    },
)
INITIALIZERS: Registry[str] = Registry(
    "keras engine kernel initializer",
    {name: name for name in ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform")},
)
LOSSES: Registry[str] = Registry(
    "keras engine loss",
    {
        "mse": "mean_squared_error",
        "binary_crossentropy": "binary_crossentropy",
        "categorical_crossentropy": "categorical_crossentropy",
        "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    },
)
OPTIMIZERS: Registry[Callable[[Any, Any], Any]] = Registry(
    "keras engine optimizer",
    {
        "sgd": lambda k, s: k.optimizers.SGD(
            learning_rate=s.learning_rate, momentum=s.momentum, nesterov=s.nesterov
        ),
        "rmsprop": lambda k, s: k.optimizers.RMSprop(
            learning_rate=s.learning_rate, rho=s.rho, epsilon=s.epsilon
        ),
        "adam": lambda k, s: k.optimizers.Adam(
            learning_rate=s.learning_rate, beta_1=s.beta_1, beta_2=s.beta_2, epsilon=s.epsilon
        ),
    },
)
LAYERS: Registry[Callable[[Any, Any], Any]] = Registry(
    "keras engine layer type",
    {
        "dense": lambda k, s: k.layers.Dense(
            s.units,
            activation=ACTIVATIONS.get(s.activation.type)(k, s.activation),
            kernel_initializer=INITIALIZERS.get(s.kernel_initializer),
        ),
        "batch_norm": lambda k, s: k.layers.BatchNormalization(
            momentum=s.momentum, epsilon=s.epsilon
        ),
        "dropout": lambda k, s: k.layers.Dropout(s.rate),
    },
)


def make_optimizer(spec: OptimizerSpec) -> Any:
    return OPTIMIZERS.get(spec.type)(_keras(), spec)


def build_model(spec: JobSpec, n_features: int) -> Any:
    """The spec as a compiled keras.Sequential, from a whitelist of layers (no custom code)."""
    keras = _keras()
    layers = [LAYERS.get(layer.type)(keras, layer) for layer in spec.layers]
    model = keras.Sequential([keras.Input(shape=(n_features,)), *layers])
    model.compile(
        optimizer=make_optimizer(spec.optimizer),
        loss=LOSSES.get(spec.loss),
        metrics=["accuracy"] if spec.task == "classification" else [],
    )
    return model


def _artifact_names(layers: Sequence[LayerSpec], n_features: int) -> list[list[str]]:
    """Per layer, the artifact's names for its get_weights(), in Keras's order."""
    names, width = [], n_features
    for i, layer in enumerate(layers):
        names.append([f"layers.{i}.{name}" for name in layer.weights(width)])
        width = layer.out_width(width)
    return names


def export_arrays(model: Any, layers: Sequence[LayerSpec], n_features: int) -> dict[str, NDArray]:
    """The model's weights under the artifact's names (`layers.<i>.<name>`)."""
    return {
        name: np.asarray(weight, dtype=np.float32)
        for layer, names in zip(model.layers, _artifact_names(layers, n_features), strict=True)
        for name, weight in zip(names, layer.get_weights(), strict=True)
    }


def import_arrays(
    model: Any, layers: Sequence[LayerSpec], n_features: int, arrays: dict[str, NDArray]
) -> None:
    """Load artifact-named arrays into the model: the inverse of export_arrays."""
    for layer, names in zip(model.layers, _artifact_names(layers, n_features), strict=True):
        if names:
            layer.set_weights([arrays[name] for name in names])


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


BEST = "best."  # prefix of the best epoch's weights in a snapshot
OPTIMIZER = "optimizer."  # prefix of the optimizer's variables, by position


def _snapshot(
    epoch: int, model: Any, spec: JobSpec, n_features: int, policy: StopPolicy, best: Any
) -> Snapshot:
    """The model's weights, its optimizer's variables (the step count included) and the policy."""
    arrays = export_arrays(model, spec.layers, n_features)
    for i, variable in enumerate(model.optimizer.variables):
        arrays[f"{OPTIMIZER}{i}"] = np.asarray(variable.numpy())
    if best is not None:
        for i, weight in enumerate(best):
            arrays[f"{BEST}{i}"] = np.asarray(weight)
    state = {"engine": "keras", "policy": policy.state()}
    return Snapshot(epoch, arrays, state)


def _restore(
    snapshot: Snapshot, model: Any, spec: JobSpec, n_features: int, policy: StopPolicy
) -> Any:
    """Load what `_snapshot` saved; returns the best epoch's weights if they were kept."""
    import_arrays(model, spec.layers, n_features, snapshot.arrays)
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    variables = optimizer.variables
    saved = sum(1 for name in snapshot.arrays if name.startswith(OPTIMIZER))
    if saved != len(variables):
        raise ValueError(
            f"the checkpoint has {saved} optimizer variables, expected {len(variables)}"
        )
    for i, variable in enumerate(variables):
        variable.assign(snapshot.arrays[f"{OPTIMIZER}{i}"])
    policy.restore(snapshot.state["policy"])
    if f"{BEST}0" not in snapshot.arrays:
        return None
    return [snapshot.arrays[f"{BEST}{i}"] for i in range(len(model.get_weights()))]


def fit_model(
    spec: JobSpec,
    data: PreparedData,
    on_epoch_end: EpochCallback,
    check: Check = no_check,
    start: Start | None = None,
) -> tuple[Any, list[EpochRecord], StopPolicy]:
    """Train a Keras model for `spec`; returns it (best weights restored if asked) and history.

    From a checkpoint, training takes up after its epoch with its weights and optimizer state
    (within Keras's own determinism: its shuffling and dropout streams start anew); with
    initial weights (warm start), it starts from them.
    """
    begin = start or Start()
    keras = _keras()
    keras.utils.set_random_seed((spec.seed + begin.first_epoch - 1) % 2**32)
    model = build_model(spec, data.n_features)
    if begin.init is not None:
        import_arrays(model, spec.layers, data.n_features, begin.init)
    policy = StopPolicy(spec.early_stopping, spec.max_seconds, spec.epochs)
    history: list[EpochRecord] = list(begin.history)
    state: dict[str, Any] = {"error": None, "best": None, "started": 0.0}
    if begin.resume is not None:
        state["best"] = _restore(begin.resume, model, spec, data.n_features, policy)

    class Reporter(keras.callbacks.Callback):  # type: ignore[name-defined]
        """Records each epoch, stops on divergence, cancellation, early stopping or time."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            state["started"] = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            try:
                check()
            except Exception as exc:  # a cancellation: stop after this batch
                state["error"] = exc
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if state["error"] is not None:
                return  # stopped within the epoch: it is not recorded
            logs = logs or {}
            record = EpochRecord(
                epoch=epoch + 1,
                loss=float(logs.get("loss", math.nan)),
                accuracy=_float_or_none(logs.get("accuracy")),
                val_loss=_float_or_none(logs.get("val_loss")),
                val_accuracy=_float_or_none(logs.get("val_accuracy")),
                seconds=time.perf_counter() - state["started"],
            )
            if not math.isfinite(record.loss):
                state["error"] = Diverged(record.epoch, record.loss)
                self.model.stop_training = True
                return
            history.append(record)
            verdict = policy.observe(record)
            if verdict.best and policy.restore_best:
                state["best"] = self.model.get_weights()
            try:
                on_epoch_end(record)
            except Exception as exc:  # a cancellation: stop cleanly, re-raised after fit
                state["error"] = exc
                self.model.stop_training = True
                return
            if verdict.stop:
                self.model.stop_training = True
            elif record.epoch < spec.epochs and begin.checkpoints.due():
                snapshot = _snapshot(
                    record.epoch, self.model, spec, data.n_features, policy, state["best"]
                )
                try:
                    begin.checkpoints.save(snapshot)
                except Exception as exc:  # superseded: stop, re-raised after fit
                    state["error"] = exc
                    self.model.stop_training = True

    has_val = data.X_val is not None and data.T_val is not None
    model.fit(
        data.X_fit,
        data.T_fit,
        validation_data=(data.X_val, data.T_val) if has_val else None,
        epochs=spec.epochs,
        initial_epoch=begin.first_epoch - 1,
        batch_size=spec.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[Reporter()],
    )
    if state["error"] is not None:
        raise state["error"]
    if state["best"] is not None:
        model.set_weights(state["best"])
    return model, history, policy


def train(
    spec: JobSpec,
    data: PreparedData,
    on_epoch_end: EpochCallback,
    check: Check = no_check,
    start: Start | None = None,
) -> EngineResult:
    """Train `spec` with Keras and export the portable artifact's arrays."""
    keras = _keras()
    try:
        model, history, policy = fit_model(spec, data, on_epoch_end, check, start)
        scores = model.evaluate(data.X_test, data.T_test, verbose=0, return_dict=True)
        return EngineResult(
            layers=describe_layers(spec.layers),
            arrays=export_arrays(model, spec.layers, data.n_features),
            history=history,
            test_loss=float(scores["loss"]),
            test_accuracy=_float_or_none(scores.get("accuracy")),
            info=policy.info(),
        )
    finally:
        keras.backend.clear_session()
