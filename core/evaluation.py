"""A trained model judged on its test split with scikit-learn's metrics, as JSON for the API.

Computed once per job, engine-independently: the stored artifact is loaded through the NumPy
runtime (the very code that serves predictions) and run on the held-out rows. Every number is a
finite float or None (`null`): a metric that is undefined for the split (ROC AUC when a class is
absent from it) is None, never NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.runtime import Predictor

RESIDUAL_BINS = 20
MAX_POINTS = 200  # (actual, predicted) pairs kept for the residual plot


def finite(value: Any) -> float | None:
    """A finite float, or None for NaN, ±inf and None."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def class_indices(targets: NDArray, loss: str) -> NDArray:
    """The class index of each row, from targets as the loss encodes them (core.losses)."""
    targets = np.asarray(targets)
    if loss == "sparse_categorical_crossentropy":
        return targets.astype(np.int64).reshape(-1)
    if loss == "binary_crossentropy":
        return (targets.reshape(-1) > 0.5).astype(np.int64)
    return targets.argmax(axis=1).astype(np.int64)  # categorical: one-hot rows


def evaluate(
    predictor: Predictor, X: NDArray, targets: NDArray, loss: str, *, scaled: bool = False
) -> dict[str, Any]:
    """The evaluation of `predictor` on rows `X` against `targets` as the loss encodes them.

    `X` holds raw features, or with `scaled` rows the stored scaler was already applied to (the
    prepared test split, which `Predictor.prepare` would give bit for bit).
    """
    import sklearn  # imported here: only workers evaluate

    with np.errstate(over="ignore", invalid="ignore"):
        x = np.ascontiguousarray(X, dtype=np.float32) if scaled else predictor.prepare(X)
        outputs = predictor.forward(x).astype(np.float64)
    # The arrays are ours and finite-checked below: scikit-learn's own argument and finiteness
    # checks were most of a tiny job's time (about 20 of its 40 ms a call, measured).
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        if predictor.task == "regression":
            actual = np.asarray(targets, dtype=np.float64).reshape(len(X), -1)
            return regression_metrics(actual, outputs)
        return classification_metrics(
            class_indices(targets, loss), probabilities(outputs), predictor.classes
        )


def probabilities(outputs: NDArray) -> NDArray:
    """Per-class probabilities from the network's outputs, as the predict route gives them."""
    if outputs.shape[1] == 1:  # one sigmoid unit: the probability of the second class
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def classification_metrics(y: NDArray, proba: NDArray, classes: list[Any]) -> dict[str, Any]:
    """Confusion matrix (rows: actual, columns: predicted, in `classes` order), per-class
    precision / recall / F1 / support, macro and weighted F1, log loss and ROC AUC."""
    from sklearn import metrics  # imported here: only workers evaluate

    n_classes = len(classes)
    labels = list(range(n_classes))
    usable = np.isfinite(proba).all(axis=1)
    y, proba = y[usable], proba[usable]
    predicted = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    per_class = [
        {
            "label": classes[i],
            "precision": finite(precision[i]),
            "recall": finite(recall[i]),
            "f1": finite(f1[i]),
            "support": int(support[i]),
        }
        for i in labels
    ]
    present = len(y) > 0
    return {
        "task": "classification",
        "split": "test",
        "n_samples": len(y),
        "labels": list(classes),
        "confusion_matrix": metrics.confusion_matrix(y, predicted, labels=labels).tolist()
        if present
        else [[0] * n_classes for _ in labels],
        "per_class": per_class,
        "accuracy": finite(metrics.accuracy_score(y, predicted)) if present else None,
        "macro_f1": finite(
            metrics.f1_score(y, predicted, labels=labels, average="macro", zero_division=0)
        )
        if present
        else None,
        "weighted_f1": finite(
            metrics.f1_score(y, predicted, labels=labels, average="weighted", zero_division=0)
        )
        if present
        else None,
        "log_loss": _log_loss(y, proba, labels),
        **_roc_auc(y, proba, n_classes),
    }


def _log_loss(y: NDArray, proba: NDArray, labels: list[int]) -> float | None:
    from sklearn.metrics import log_loss

    if not len(y):
        return None
    # Clipped to float32's epsilon as the losses are, so a confident mistake stays finite.
    eps = float(np.finfo(np.float32).eps)
    clipped = np.clip(proba, eps, 1 - eps)
    clipped /= clipped.sum(axis=1, keepdims=True)
    try:
        return finite(log_loss(y, clipped, labels=labels))
    except ValueError:
        return None


def _roc_auc(y: NDArray, proba: NDArray, n_classes: int) -> dict[str, Any]:
    """ROC AUC: binary on the second class's probability; one-vs-rest macro for more classes.
    None when it is undefined (a class absent from the split)."""
    from sklearn.metrics import roc_auc_score

    average = "binary" if n_classes == 2 else "ovr_macro"
    if len(np.unique(y)) < n_classes:
        return {"roc_auc": None, "roc_auc_average": average}
    try:
        if n_classes == 2:
            value = roc_auc_score(y, proba[:, 1])
        else:
            # sklearn insists that multi-class scores sum to one; softmax rows do only within
            # rounding, renormalized they do to its tolerance.
            scores = proba / proba.sum(axis=1, keepdims=True)
            value = roc_auc_score(
                y, scores, multi_class="ovr", average="macro", labels=list(range(n_classes))
            )
    except ValueError:
        value = None
    return {"roc_auc": finite(value), "roc_auc_average": average}


def regression_metrics(actual: NDArray, predicted: NDArray) -> dict[str, Any]:
    """MAE, RMSE and R² (averaged over targets), and a summary and histogram of the residuals
    (predicted - actual), with a sample of (actual, predicted) pairs of the first target."""
    from sklearn import metrics

    usable = np.isfinite(predicted).all(axis=1)
    actual, predicted = actual[usable], predicted[usable]
    n = len(actual)
    residuals = (predicted - actual).reshape(-1)
    summary: dict[str, float | None] = dict.fromkeys(
        ("mean", "std", "min", "p05", "q25", "median", "q75", "p95", "max")
    )
    histogram: dict[str, list[Any]] = {"edges": [], "counts": []}
    if n:
        q = np.percentile(residuals, [0, 5, 25, 50, 75, 95, 100])
        summary = {
            "mean": finite(residuals.mean()),
            "std": finite(residuals.std()),
            "min": finite(q[0]),
            "p05": finite(q[1]),
            "q25": finite(q[2]),
            "median": finite(q[3]),
            "q75": finite(q[4]),
            "p95": finite(q[5]),
            "max": finite(q[6]),
        }
        counts, edges = np.histogram(residuals, bins=RESIDUAL_BINS)
        histogram = {"edges": [finite(e) for e in edges], "counts": counts.tolist()}
    step = max(1, math.ceil(n / MAX_POINTS))
    points = [
        [finite(a), finite(p)] for a, p in zip(actual[::step, 0], predicted[::step, 0], strict=True)
    ]
    return {
        "task": "regression",
        "split": "test",
        "n_samples": int(n),
        "n_targets": int(actual.shape[1]),
        "mae": finite(metrics.mean_absolute_error(actual, predicted)) if n else None,
        "rmse": finite(math.sqrt(metrics.mean_squared_error(actual, predicted))) if n else None,
        # R² is undefined for fewer than two rows (sklearn warns and answers NaN).
        "r2": finite(metrics.r2_score(actual, predicted)) if n >= 2 else None,
        "residuals": summary,
        "residual_histogram": histogram,
        "points": points,
    }
