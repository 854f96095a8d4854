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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.spec import JobSpec
from worker.artifact import describe_layers
from worker.engines.base import (
    Diverged,
    EngineResult,
    EpochCallback,
    EpochRecord,
    PreparedData,
)
from worker.engines.stopping import StopPolicy

KERAS_LOSSES = {
    "mse": "mean_squared_error",
    "binary_crossentropy": "binary_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
}


def _keras() -> Any:
    """Import Keras on the TensorFlow back end, with thread counts set before TF starts."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    threads = int(os.environ.get("TF_NUM_THREADS", "0"))  # 0: TensorFlow picks
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already started in this process; the first job's setting stands
    import keras

    return keras


def make_optimizer(spec: Any) -> Any:
    keras = _keras()
    if spec.type == "sgd":
        return keras.optimizers.SGD(
            learning_rate=spec.learning_rate, momentum=spec.momentum, nesterov=spec.nesterov
        )
    if spec.type == "rmsprop":
        return keras.optimizers.RMSprop(
            learning_rate=spec.learning_rate, rho=spec.rho, epsilon=spec.epsilon
        )
    return keras.optimizers.Adam(
        learning_rate=spec.learning_rate,
        beta_1=spec.beta_1,
        beta_2=spec.beta_2,
        epsilon=spec.epsilon,
    )


def build_model(spec: JobSpec, n_features: int) -> Any:
    """The spec as a compiled keras.Sequential, from a whitelist of layers (no custom code)."""
    keras = _keras()
    layers: list[Any] = [keras.Input(shape=(n_features,))]
    for layer in spec.layers:
        if layer.type == "dense":
            layers.append(
                keras.layers.Dense(
                    layer.units,
                    activation=layer.activation,
                    kernel_initializer=layer.kernel_initializer,
                )
            )
        elif layer.type == "batch_norm":
            layers.append(
                keras.layers.BatchNormalization(momentum=layer.momentum, epsilon=layer.epsilon)
            )
        else:
            layers.append(keras.layers.Dropout(layer.rate))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=make_optimizer(spec.optimizer),
        loss=KERAS_LOSSES[spec.loss],
        metrics=["accuracy"] if spec.task == "classification" else [],
    )
    return model


def _weight_names(layer: Any) -> list[str]:
    """The artifact's names for a Keras layer's get_weights(), in Keras's order."""
    keras = _keras()
    if isinstance(layer, keras.layers.Dense):
        return ["kernel", "bias"]
    if isinstance(layer, keras.layers.BatchNormalization):
        return ["gamma", "beta", "moving_mean", "moving_variance"]
    return []


def export_arrays(model: Any) -> dict[str, NDArray]:
    """The model's weights under the artifact's names (`layers.<i>.<name>`)."""
    return {
        f"layers.{i}.{name}": np.asarray(weight, dtype=np.float32)
        for i, layer in enumerate(model.layers)
        for name, weight in zip(_weight_names(layer), layer.get_weights(), strict=True)
    }


def import_arrays(model: Any, arrays: dict[str, NDArray]) -> None:
    """Load artifact-named arrays into the model: the inverse of export_arrays."""
    for i, layer in enumerate(model.layers):
        names = _weight_names(layer)
        if names:
            layer.set_weights([arrays[f"layers.{i}.{name}"] for name in names])


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def fit_model(
    spec: JobSpec, data: PreparedData, on_epoch_end: EpochCallback
) -> tuple[Any, list[EpochRecord], StopPolicy]:
    """Train a Keras model for `spec`; returns it (best weights restored if asked) and history."""
    keras = _keras()
    keras.utils.set_random_seed(spec.seed)
    model = build_model(spec, data.n_features)
    policy = StopPolicy(spec.early_stopping, spec.max_seconds, spec.epochs)
    history: list[EpochRecord] = []
    state: dict[str, Any] = {"error": None, "best": None, "started": 0.0}

    class Reporter(keras.callbacks.Callback):  # type: ignore[name-defined]
        """Records each epoch, stops on divergence, cancellation, early stopping or time."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            state["started"] = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
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
            if policy.improved(record) and policy.restore_best:
                state["best"] = self.model.get_weights()
            try:
                on_epoch_end(record)
            except Exception as exc:  # a cancellation: stop cleanly, re-raised after fit
                state["error"] = exc
                self.model.stop_training = True
                return
            if policy.should_stop(record):
                self.model.stop_training = True

    has_val = data.X_val is not None and data.T_val is not None
    model.fit(
        data.X_fit,
        data.T_fit,
        validation_data=(data.X_val, data.T_val) if has_val else None,
        epochs=spec.epochs,
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


def train(spec: JobSpec, data: PreparedData, on_epoch_end: EpochCallback) -> EngineResult:
    """Train `spec` with Keras and export the portable artifact's arrays."""
    keras = _keras()
    try:
        model, history, policy = fit_model(spec, data, on_epoch_end)
        scores = model.evaluate(data.X_test, data.T_test, verbose=0, return_dict=True)
        return EngineResult(
            layers=describe_layers(spec),
            arrays=export_arrays(model),
            history=history,
            test_loss=float(scores["loss"]),
            test_accuracy=_float_or_none(scores.get("accuracy")),
            info=policy.info(),
        )
    finally:
        keras.backend.clear_session()
