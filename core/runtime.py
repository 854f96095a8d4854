"""The NumPy inference runtime: serves any artifact, from either engine, without TensorFlow."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.activations import bind
from core.artifact import Artifact
from core.folding import AffineStep, DenseStep, Step, folded_steps
from core.layers import Op

# Outputs (rows x units) up to this many are answered from Python lists (`Predictor._answer`):
# fewer NumPy calls, each of which costs more than the arithmetic for a row or two.
SMALL_ANSWER = 64


class NotFinite(ValueError):
    """Rows whose outputs are not finite numbers (inputs beyond what the model computes with)."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(f"the outputs of {len(rows)} rows are not finite")
        self.rows = rows


def _op(step: Step) -> Op:
    """One inference step as a function of float32 rows."""
    if isinstance(step, DenseStep):
        act = bind(step.activation).forward
        kernel = step.kernel.astype(np.float32)
        bias = step.bias.astype(np.float32)
        if step.activation.type == "linear":
            return lambda x: x @ kernel + bias
        return lambda x: act(x @ kernel + bias)
    if isinstance(step, AffineStep):
        scale, shift = step.scale.astype(np.float32), step.shift.astype(np.float32)
        return lambda x: x * scale + shift
    return step.op


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
        # Batch norms folded into the dense layers, dropout gone: fewer, larger steps.
        self.ops: list[Op] = [_op(step) for step in folded_steps(artifact)]

    @classmethod
    def from_bytes(cls, blob: bytes) -> Predictor:
        return cls(Artifact.from_bytes(blob))

    def prepare(self, X: NDArray) -> NDArray:
        """Apply the stored scaler (fitted on the training rows) and cast to float32."""
        if type(X) is not np.ndarray or X.dtype != np.float64:
            X = np.asarray(X, dtype=np.float64)
        if self.mean is not None and self.scale is not None:
            X = X - self.mean
            X /= self.scale
        return X.astype(np.float32, order="C")

    def outputs(self, X: NDArray) -> NDArray:
        return self.forward(self.prepare(X))

    def forward(self, x: NDArray) -> NDArray:
        """The network's outputs for rows already scaled (float32), as `prepare` gives them."""
        for op in self.ops:
            x = op(x)
        return x

    def predict(self, X: NDArray) -> dict[str, Any]:
        """Predictions (and class probabilities); `NotFinite` naming any row that overflowed.

        Few NumPy calls on purpose: for one row, each costs about what the arithmetic does, so a
        small answer (a few rows) is finished in Python from the outputs as lists. float32
        outputs convert to the same Python floats as through float64."""
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is answered just below
            out = self.outputs(X)
            if out.size <= SMALL_ANSWER:
                return self._answer(out.tolist())
            total = out.sum()  # finite: every output is (one NumPy call when all is well)
        if not math.isfinite(total):  # some output is not, or the sum alone overflowed
            bad = np.flatnonzero(~np.isfinite(out).all(axis=1)).tolist()
            if bad:
                raise NotFinite(bad)
        if self.task == "regression":
            return {"predictions": (out[:, 0] if self.n_targets == 1 else out).tolist()}
        if out.shape[1] == 1:  # one sigmoid unit: the probability of the second class
            p1 = out[:, 0].astype(np.float64)
            probabilities = np.stack([1.0 - p1, p1], axis=1)
        else:
            probabilities = out
        classes = self.classes
        return {
            "predictions": [classes[i] for i in probabilities.argmax(axis=1).tolist()],
            "probabilities": probabilities.tolist(),
        }

    def _answer(self, rows: list[list[float]]) -> dict[str, Any]:
        """`predict`'s answer from a few rows of outputs, in Python (the same values: Python's
        float arithmetic is float64's, and `index(max)` picks the first highest as argmax)."""
        isfinite = math.isfinite
        if not all(isfinite(x) for row in rows for x in row):
            raise NotFinite([i for i, row in enumerate(rows) if not all(map(isfinite, row))])
        if self.task == "regression":
            return {"predictions": [row[0] for row in rows] if self.n_targets == 1 else rows}
        if rows and len(rows[0]) == 1:  # one sigmoid unit: the probability of the second class
            rows = [[1.0 - p, p] for (p,) in rows]
        classes = self.classes
        return {
            "predictions": [classes[row.index(max(row))] for row in rows],
            "probabilities": rows,
        }
