"""The NumPy inference runtime: serves any artifact, from either engine, without TensorFlow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.artifact import Artifact
from worker.engines.numpy_engine.activations import ACTIVATIONS

Op = Callable[[NDArray], NDArray]


def _dense(kernel: NDArray, bias: NDArray, activation: str) -> Op:
    act = ACTIVATIONS[activation].forward
    return lambda x: act(x @ kernel + bias)


def _batch_norm(arrays: dict[str, NDArray], prefix: str, epsilon: float) -> Op:
    # Inference-time batch normalization is an affine map: fold it into one scale and shift.
    gamma, beta = arrays[prefix + "gamma"], arrays[prefix + "beta"]
    mean, var = arrays[prefix + "moving_mean"], arrays[prefix + "moving_variance"]
    scale = (gamma / np.sqrt(var + epsilon)).astype(np.float32)
    shift = (beta - mean * scale).astype(np.float32)
    return lambda x: x * scale + shift


class Predictor:
    """A loaded model: `outputs` gives the network's raw outputs, `predict` the API's answer."""

    def __init__(self, artifact: Artifact) -> None:
        meta, arrays = artifact.meta, artifact.arrays
        self.meta = meta
        self.n_features: int = int(meta["n_features"])
        self.task: str = meta["task"]
        self.classes: list[Any] = list(meta.get("classes") or [])
        self.n_targets: int = int(meta.get("n_targets", 1))
        self.mean = arrays.get("scaler.mean")
        self.scale = arrays.get("scaler.scale")
        self.ops: list[Op] = []
        for i, layer in enumerate(meta["layers"]):
            prefix = f"layers.{i}."
            if layer["type"] == "dense":
                kernel = arrays[prefix + "kernel"].astype(np.float32)
                bias = arrays[prefix + "bias"].astype(np.float32)
                self.ops.append(_dense(kernel, bias, layer["activation"]))
            elif layer["type"] == "batch_norm":
                self.ops.append(_batch_norm(arrays, prefix, float(layer["epsilon"])))

    @classmethod
    def from_bytes(cls, blob: bytes) -> Predictor:
        return cls(Artifact.from_bytes(blob))

    def prepare(self, X: NDArray) -> NDArray:
        """Apply the stored scaler (fitted on the training rows) and cast to float32."""
        X = np.asarray(X, dtype=np.float64)
        if self.mean is not None and self.scale is not None:
            X = (X - self.mean) / self.scale
        return np.ascontiguousarray(X, dtype=np.float32)

    def outputs(self, X: NDArray) -> NDArray:
        x = self.prepare(X)
        for op in self.ops:
            x = op(x)
        return x

    def predict(self, X: NDArray) -> dict[str, Any]:
        out = self.outputs(X)
        if self.task == "regression":
            values = out[:, 0] if self.n_targets == 1 else out
            return {"predictions": values.astype(np.float64).tolist()}
        if out.shape[1] == 1:  # one sigmoid unit: the probability of the second class
            p1 = out[:, 0].astype(np.float64)
            probabilities = np.stack([1.0 - p1, p1], axis=1)
        else:
            probabilities = out.astype(np.float64)
        labels = probabilities.argmax(axis=1)
        return {
            "predictions": [self.classes[i] for i in labels],
            "probabilities": probabilities.tolist(),
        }
