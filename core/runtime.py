"""The NumPy inference runtime: serves any artifact, from either engine, without TensorFlow."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.activations import ACTIVATIONS, bind
from core.artifact import Artifact
from core.folding import AffineStep, DenseStep, Step, folded_steps
from core.layers import Op

# Outputs (rows x units) up to this many are answered from Python lists (`Predictor._answer`):
# fewer NumPy calls, each of which costs more than the arithmetic for a row or two.
SMALL_ANSWER = 64
# Requests of at most this many values (rows x (features + outputs)) are scaled in Python and
# their output activation computed in Python (`Predictor._predict_few`): a one-row prediction's
# NumPy calls cost far more than its arithmetic when the process's caches are cold, as a
# server's are between requests (`benchmarks.predict_breakdown` shows what predicting costs).
SMALL_INPUT = 256
# Output activations computed in float64 from the network's float32 outputs: in NumPy for many
# rows, in Python for a few, so both give the same probabilities (to float64's last bits).
FINISHED = frozenset(("softmax", "sigmoid"))
# A bound every value inside the network stays under for `Predictor._predict_few` to run without
# NumPy's floating-point checks (np.errstate); float32 reaches 3.4e38.
QUIET_BOUND = 1e30


# Rows to predict: an array, or lists of numbers as a request's JSON gives them.
Rows = NDArray | list[list[float]]


class NotFinite(ValueError):
    """Rows whose outputs are not finite numbers (inputs beyond what the model computes with)."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__(f"the outputs of {len(rows)} rows are not finite")
        self.rows = rows


def _op(step: Step, finished: bool = False) -> Op:
    """One inference step as a function of float32 rows (without its activation when
    `finished`: the caller applies that in float64)."""
    if isinstance(step, DenseStep):
        act = bind(step.activation).forward
        kernel = step.kernel.astype(np.float32)
        bias = step.bias.astype(np.float32)
        if finished or step.activation.type == "linear":
            return lambda x: x @ kernel + bias
        return lambda x: act(x @ kernel + bias)
    if isinstance(step, AffineStep):
        scale, shift = step.scale.astype(np.float32), step.shift.astype(np.float32)
        return lambda x: x * scale + shift
    return step.op


def quiet_limit(steps: list[Step], finish: str | None) -> float:
    """The largest sum of a row's absolute scaled inputs for which no value inside the network
    can pass QUIET_BOUND (0.0 when a step's growth is not known).

    A dense layer's outputs are at most its inputs' bound times its largest column sum of
    |weights| plus its largest |bias|; an activation at most doubles a value and adds 2 (relu,
    tanh, sigmoid, leaky_relu, elu, selu, gelu, softplus and swish all stay within that). So the
    bound after every step is `a * inputs + c`, composed step by step.
    """
    a, c = 1.0, 0.0
    for i, step in enumerate(steps):
        if isinstance(step, DenseStep):
            growth = float(np.abs(step.kernel).sum(axis=0).max(initial=0.0))
            a, c = a * growth, c * growth + float(np.abs(step.bias).max(initial=0.0))
            if not (i == len(steps) - 1 and finish is not None):
                a, c = 2 * a, 2 * c + 2
        elif isinstance(step, AffineStep):
            growth = float(np.abs(step.scale).max(initial=0.0))
            a, c = a * growth, c * growth + float(np.abs(step.shift).max(initial=0.0))
        else:
            return 0.0
    if not c < QUIET_BOUND:  # NaN weights land here too
        return 0.0
    return math.inf if a == 0 else (QUIET_BOUND - c) / a


def _softmax_rows(rows: list[list[float]]) -> list[list[float]]:
    """Row-wise softmax in Python floats, as `core.activations.softmax` computes it in float64."""
    exp = math.exp
    out = []
    for row in rows:
        top = max(row)
        e = [exp(v - top) for v in row]
        total = sum(e)
        out.append([v / total for v in e])
    return out


def _sigmoid_rows(rows: list[list[float]]) -> list[list[float]]:
    """The sigmoid in Python floats, in the tanh form `core.activations` uses."""
    tanh = math.tanh
    return [[0.5 * (1.0 + tanh(0.5 * v)) for v in row] for row in rows]


_IN_PYTHON = {"softmax": _softmax_rows, "sigmoid": _sigmoid_rows}
_IN_NUMPY = {name: ACTIVATIONS.get(name).forward for name in FINISHED}
_QUIET = nullcontext()


class Predictor:
    """A loaded model: `outputs` gives the network's outputs, `predict` the API's answer.

    The network runs in float32; a softmax or sigmoid output activation runs in float64 on its
    float32 inputs (in NumPy for many rows, in Python for a few: the same numbers either way).
    """

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
        steps = folded_steps(artifact)
        last = steps[-1] if steps else None
        self.finish: str | None = None
        if isinstance(last, DenseStep) and last.activation.type in FINISHED:
            self.finish = last.activation.type
        self.ops: list[Op] = [
            _op(step, finished=self.finish is not None and step is last) for step in steps
        ]
        # `_predict_few`'s view of the model: the scaler as Python floats, the input bound under
        # which nothing can overflow, and up to how many rows it serves (by the values a row
        # puts in and gets out; none if a scale is 0, which Python would not divide by).
        self._shift = None if self.mean is None else self.mean.tolist()
        self._divide = None if self.scale is None else self.scale.tolist()
        self.quiet_limit = quiet_limit(steps, self.finish)
        with np.errstate(all="ignore"):
            n_outputs = self.network(np.zeros((1, self.n_features), np.float32)).shape[1]
        usable = self._divide is None or all(self._divide)
        self.few_rows = SMALL_INPUT // (self.n_features + int(n_outputs)) if usable else 0

    @classmethod
    def from_bytes(cls, blob: bytes) -> Predictor:
        return cls(Artifact.from_bytes(blob))

    def prepare(self, X: Rows) -> NDArray:
        """Apply the stored scaler (fitted on the training rows) and cast to float32."""
        if type(X) is not np.ndarray or X.dtype != np.float64:
            X = np.asarray(X, dtype=np.float64)
        if self.mean is not None and self.scale is not None:
            X = X - self.mean
            X /= self.scale
        return X.astype(np.float32, order="C")

    def outputs(self, X: Rows) -> NDArray:
        return self.forward(self.prepare(X))

    def network(self, x: NDArray) -> NDArray:
        """The float32 network on rows already scaled, up to its float64 output activation."""
        for op in self.ops:
            x = op(x)
        return x

    def forward(self, x: NDArray) -> NDArray:
        """The network's outputs for rows already scaled (float32), as `prepare` gives them."""
        out = self.network(x)
        if self.finish is not None:
            out = _IN_NUMPY[self.finish](out.astype(np.float64))
        return out

    def predict(self, X: Rows) -> dict[str, Any]:
        """Predictions (and class probabilities); `NotFinite` naming any row that overflowed.

        `X` is an array of rows or, as a request's JSON gives them, a list of lists of numbers.
        Few NumPy calls on purpose: for one row, each costs about what the arithmetic does, so a
        few rows go through `_predict_few` and a small answer is finished in Python from the
        outputs as lists. float32 outputs convert to the same Python floats as through float64.
        """
        if 0 < len(X) <= self.few_rows:
            return self._predict_few(X if type(X) is list else np.asarray(X).tolist())
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is answered just below
            out = self.outputs(X)
            if out.size <= SMALL_ANSWER:
                return self._answer(_finite(out.tolist()))
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

    def _predict_few(self, rows: list[list[float]]) -> dict[str, Any]:
        """`predict` for a few rows: scaled in Python (float64 arithmetic, as `prepare`'s), one
        array through the float32 network, the output activation in Python (as `forward`'s).

        NumPy's floating-point checks (np.errstate) are skipped when the inputs are small enough
        that nothing can overflow (`quiet_limit`): they are one of the costlier calls here.
        """
        if self._shift is not None and self._divide is not None:
            shift, divide = self._shift, self._divide
            rows = [
                [(v - m) / s for v, m, s in zip(row, shift, divide, strict=True)] for row in rows
            ]
        else:  # each number to float64 first, as `prepare` casts it
            rows = [list(map(float, row)) for row in rows]
        # All rows' |inputs| summed (no less than any one row's); NaN and infinity fail the test.
        size = sum(abs(v) for row in rows for v in row)
        checks = _QUIET if size < self.quiet_limit else np.errstate(over="ignore", invalid="ignore")
        with checks:
            out = _finite(self.network(np.array(rows, dtype=np.float32)).tolist())
        if self.finish is not None:
            out = _IN_PYTHON[self.finish](out)
        return self._answer(out)

    def _answer(self, rows: list[list[float]]) -> dict[str, Any]:
        """`predict`'s answer from a few rows of finite outputs, in Python (the same values:
        Python's float arithmetic is float64's, and `index(max)` picks the first highest as
        argmax)."""
        if self.task == "regression":
            return {"predictions": [row[0] for row in rows] if self.n_targets == 1 else rows}
        if rows and len(rows[0]) == 1:  # one sigmoid unit: the probability of the second class
            rows = [[1.0 - p, p] for (p,) in rows]
        classes = self.classes
        return {
            "predictions": [classes[row.index(max(row))] for row in rows],
            "probabilities": rows,
        }


def _finite(rows: list[list[float]]) -> list[list[float]]:
    """`rows`, when every value is finite; else `NotFinite` naming the rows that are not."""
    isfinite = math.isfinite
    if not all(isfinite(x) for row in rows for x in row):
        raise NotFinite([i for i, row in enumerate(rows) if not all(map(isfinite, row))])
    return rows
