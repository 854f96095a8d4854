"""A trained model judged on its test split with scikit-learn's metrics, as JSON for the API.

The metrics are scikit-learn's definitions computed in NumPy (tests/unit/test_evaluation.py checks
them against scikit-learn itself): scikit-learn's input validation alone cost ~0.1 s a job.

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
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.ascontiguousarray(X, dtype=np.float32) if scaled else predictor.prepare(X)
        outputs = predictor.forward(x).astype(np.float64)
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
    precision / recall / F1 / support, macro and weighted F1, log loss and ROC AUC.

    scikit-learn's definitions (zero_division=0, one-vs-rest macro ROC AUC with tied scores
    averaged), computed in NumPy from the confusion matrix: every job ends with this, and
    scikit-learn's input checks cost ~100 ms a call on a tiny test split. The unit tests check
    every number against scikit-learn's own functions.
    """
    n_classes = len(classes)
    labels = list(range(n_classes))
    usable = np.isfinite(proba).all(axis=1)
    y, proba = y[usable], proba[usable]
    predicted = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=np.int64)
    matrix = np.bincount(y * n_classes + predicted, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    precision = _ratio(tp, predicted_count)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted_count)
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
    total = int(support.sum())
    return {
        "task": "classification",
        "split": "test",
        "n_samples": len(y),
        "labels": list(classes),
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class,
        "accuracy": finite(tp.sum() / len(y)) if present else None,
        "macro_f1": finite(f1.mean()) if present else None,
        "weighted_f1": finite((f1 * support).sum() / total) if present and total else None,
        "log_loss": _log_loss(y, proba, labels),
        **_roc_auc(y, proba, n_classes),
    }


def _ratio(numerator: NDArray, denominator: NDArray) -> NDArray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _log_loss(y: NDArray, proba: NDArray, labels: list[int]) -> float | None:
    if not len(y) or proba.shape[1] != len(labels):
        return None
    # Clipped to float32's epsilon as the losses are, so a confident mistake stays finite.
    eps = float(np.finfo(np.float32).eps)
    clipped = np.clip(proba, eps, 1 - eps)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return finite(-np.log(clipped[np.arange(len(y)), y]).mean())


def _binary_auc(positive: NDArray, scores: NDArray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic over average ranks (ties count
    one half), which equals scikit-learn's trapezoidal area."""
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # Average rank (1-based) of each run of tied scores.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _roc_auc(y: NDArray, proba: NDArray, n_classes: int) -> dict[str, Any]:
    """ROC AUC: binary on the second class's probability; one-vs-rest macro for more classes.
    None when it is undefined (a class absent from the split)."""
    average = "binary" if n_classes == 2 else "ovr_macro"
    if len(np.unique(y)) < n_classes or n_classes < 2 or proba.shape[1] != n_classes:
        return {"roc_auc": None, "roc_auc_average": average}
    if n_classes == 2:
        value = _binary_auc(y == 1, proba[:, 1])
    else:
        # As scikit-learn scores them: rows renormalized to sum to one in float64.
        scores = proba / proba.sum(axis=1, keepdims=True)
        value = float(np.mean([_binary_auc(y == k, scores[:, k]) for k in range(n_classes)]))
    return {"roc_auc": finite(value), "roc_auc_average": average}


def regression_metrics(actual: NDArray, predicted: NDArray) -> dict[str, Any]:
    """MAE, RMSE and R² (averaged over targets), and a summary and histogram of the residuals
    (predicted - actual), with a sample of (actual, predicted) pairs of the first target."""
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
        "mae": finite(np.abs(predicted - actual).mean(axis=0).mean()) if n else None,
        "rmse": finite(math.sqrt(((predicted - actual) ** 2).mean(axis=0).mean())) if n else None,
        # R² is undefined for fewer than two rows (sklearn warns and answers NaN).
        "r2": _r2(actual, predicted) if n >= 2 else None,
        "residuals": summary,
        "residual_histogram": histogram,
        "points": points,
    }


def _r2(actual: NDArray, predicted: NDArray) -> float | None:
    """R², averaged over targets as scikit-learn's r2_score (uniform average, force_finite):
    a constant target scores 1 when predicted exactly, else 0."""
    residual = ((actual - predicted) ** 2).sum(axis=0)
    total = ((actual - actual.mean(axis=0)) ** 2).sum(axis=0)
    scores = np.ones(actual.shape[1], dtype=np.float64)
    defined = total != 0
    scores[defined] = 1 - residual[defined] / total[defined]
    scores[~defined & (residual != 0)] = 0.0
    return finite(scores.mean())
