"""Learning-curve figures as PNG, rendered with matplotlib's Agg canvas, and a cache for them."""

from __future__ import annotations

import hashlib
import io
import itertools
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.lru import LRU
from core.models import TERMINAL_STATUSES, Job, JobMetric, Sweep
from core.sweeps import summarize
from service import offload
from service.jobs import job_history

# Figure objects (never pyplot's global state) are safe to build in any thread, but matplotlib's
# font and text-layout caches are shared; one render at a time costs little (it holds the GIL).
# Renders run in native threads under gevent (service.offload), so the lock is a native one.
_RENDER_LOCK = offload.native_lock()

TRAIN_COLOR, VAL_COLOR = "#1f77b4", "#ff7f0e"


def _series(history: Sequence[dict[str, Any]], name: str) -> list[float]:
    values = []
    for row in history:
        value = row.get(name)
        values.append(float(value) if value is not None else math.nan)
    return values


def _has(history: Sequence[dict[str, Any]], name: str) -> bool:
    return any(row.get(name) is not None for row in history)


def render_png(history: Sequence[dict[str, Any]], title: str) -> bytes:
    """Loss (and accuracy, when recorded) per epoch, training vs validation, as PNG bytes."""
    panels = [("loss", "Loss")]
    if _has(history, "accuracy") or _has(history, "val_accuracy"):
        panels.append(("accuracy", "Accuracy"))
    with _RENDER_LOCK:
        fig = Figure(figsize=(5.5 * len(panels), 4.2), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(title)
        epochs = [int(row["epoch"]) for row in history]
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (name, label) in zip(axes, panels, strict=True):
            ax.set_title(label)
            ax.set_xlabel("Epoch")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if not history:
                ax.text(
                    0.5,
                    0.5,
                    "no epochs yet",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="gray",
                )
                continue
            marker = "o" if len(epochs) <= 30 else None
            for series, color, legend in (
                (name, TRAIN_COLOR, "Training"),
                (f"val_{name}", VAL_COLOR, "Validation"),
            ):
                if _has(history, series):
                    values = _series(history, series)
                    ax.plot(epochs, values, color=color, marker=marker, ms=3, label=legend)
            ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def job_plot(job: Job, *, session: Session, cache: PlotCache) -> tuple[str, bytes, bool]:
    """(ETag, PNG, final) for a job's curves; a finished job's plot is rendered once and cached."""
    final = job.status in TERMINAL_STATUSES
    if final and (cached := cache.get(job.id)) is not None:
        return (*cached, True)
    history = [epoch.dump() for epoch in job_history(job, session=session)]
    png = offload.run(render_png, history, f"{job.name or job.id} — {job.status}")
    if final:
        return (*cache.put(job.id, png), True)
    return etag_for(png), png, False


def etag_for(png: bytes) -> str:
    """A strong entity tag (unquoted) for the image bytes."""
    return hashlib.sha256(png).hexdigest()[:32]


class PlotCache(LRU[str, tuple[str, bytes]]):
    """An LRU of rendered plots of finished jobs (their curves can no longer change)."""

    def __init__(self, size: int = 128) -> None:
        super().__init__(size)

    def put(self, job_id: str, png: bytes) -> tuple[str, bytes]:
        """Remember a finished job's plot; its (ETag, PNG)."""
        item = (etag_for(png), png)
        self.set(job_id, item)
        return item


# -- a model's evaluation (core.evaluation): confusion-matrix heat map or residual plot ---------


def render_evaluation_png(evaluation: dict[str, Any], title: str) -> bytes:
    """The confusion matrix as a heat map (classification), or predicted vs actual and the
    residual histogram (regression), as PNG bytes."""
    with _RENDER_LOCK:
        if evaluation["task"] == "classification":
            fig = _confusion_figure(evaluation, title)
        else:
            fig = _residual_figure(evaluation, title)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _confusion_figure(evaluation: dict[str, Any], title: str) -> Figure:
    labels = [str(label) for label in evaluation["labels"]]
    matrix = evaluation["confusion_matrix"]
    n = len(labels)
    side = min(12.0, 3.5 + 0.45 * n)
    fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Test rows")
    ax.set_xticks(range(n), labels, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("Actual class")
    top = max((max(row) for row in matrix), default=0)
    if n <= 20:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                color = "white" if top and count > top / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=9)
    accuracy, macro = evaluation.get("accuracy"), evaluation.get("macro_f1")
    scores = " · ".join(
        f"{name} {value:.3f}"
        for name, value in (("accuracy", accuracy), ("macro F1", macro))
        if value is not None
    )
    ax.set_title(f"{title}\n{scores}" if scores else title)
    return fig


def _residual_figure(evaluation: dict[str, Any], title: str) -> Figure:
    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    scores = " · ".join(
        f"{name} {evaluation[key]:.4g}"
        for name, key in (("MAE", "mae"), ("RMSE", "rmse"), ("R²", "r2"))
        if evaluation.get(key) is not None
    )
    fig.suptitle(f"{title}\n{scores}" if scores else title)
    left, right = fig.subplots(1, 2)
    points = [(a, p) for a, p in evaluation.get("points", []) if a is not None and p is not None]
    left.set_title("Predicted vs actual (test rows)")
    left.set_xlabel("Actual")
    left.set_ylabel("Predicted")
    left.grid(True, alpha=0.3)
    if points:
        actual, predicted = zip(*points, strict=True)
        left.scatter(actual, predicted, s=12, alpha=0.7, color=TRAIN_COLOR)
        low, high = min(*actual, *predicted), max(*actual, *predicted)
        left.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1)
    histogram = evaluation.get("residual_histogram") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    right.set_title("Residuals (predicted - actual)")
    right.set_xlabel("Residual")
    right.set_ylabel("Test values")
    right.grid(True, alpha=0.3)
    if counts and None not in edges:
        widths = [b - a for a, b in itertools.pairwise(edges)]
        right.bar(edges[:-1], counts, width=widths, align="edge", color=VAL_COLOR, alpha=0.8)
        right.axvline(0.0, color="gray", linestyle="--", linewidth=1)
    return fig


def evaluation_plot(
    model_id: str, evaluation: dict[str, Any], title: str, *, cache: PlotCache
) -> tuple[str, bytes]:
    """(ETag, PNG) of a model's evaluation; rendered once (it never changes) and cached."""
    key = f"evaluation:{model_id}"
    if (cached := cache.get(key)) is not None:
        return cached
    png = offload.run(render_evaluation_png, evaluation, title)
    return cache.put(key, png)


# -- a sweep: every trial's curve, and the objective against each searched parameter ------


PRUNED_COLOR, BEST_COLOR = "#d62728", "#2ca02c"


def sweep_plot(sweep: Sweep, *, session: Session, cache: PlotCache) -> tuple[str, bytes, bool]:
    """(ETag, PNG, final) for a sweep's figure; a finished sweep's is rendered once and cached."""
    final = sweep.status in TERMINAL_STATUSES
    key = f"sweep:{sweep.id}"
    if final and (cached := cache.get(key)) is not None:
        return (*cached, True)
    summary = summarize(session, sweep)
    metric = sweep.request["objective"]["metric"]
    curve = metric if not metric.startswith("test_") else "val_loss"
    trials = summary.board
    ids = [t.job_id for t in trials]
    curves: dict[str, list[tuple[int, float]]] = {job_id: [] for job_id in ids}
    if ids:
        column = getattr(JobMetric, curve)
        for job_id, epoch, value in session.execute(
            select(JobMetric.job_id, JobMetric.epoch, column)
            .where(JobMetric.job_id.in_(ids))
            .order_by(JobMetric.job_id, JobMetric.epoch)
        ):
            if value is not None:
                curves[job_id].append((epoch, float(value)))
    lines = [
        {
            "points": curves[t.job_id],
            "pruned": t.error is not None and t.error.get("code") == "pruned",
            "best": summary.best is not None and t.job_id == summary.best.job_id,
        }
        for t in trials
    ]
    points = [
        (t.params, float(t.objective), t.status == "succeeded")
        for t in trials
        if t.objective is not None
    ]
    title = f"{sweep.name or sweep.id} — {sweep.status} ({summary.finished}/{summary.total})"
    png = offload.run(
        render_sweep_png, lines, points, list(sweep.request["space"]), curve, metric, title
    )
    if final:
        return (*cache.put(key, png), True)
    return etag_for(png), png, False


def render_sweep_png(
    lines: list[dict[str, Any]],
    points: list[tuple[dict[str, Any], float, bool]],
    names: list[str],
    curve: str,
    metric: str,
    title: str,
) -> bytes:
    """Every trial's curve overlaid (pruned ones red and dashed, ending in x; the best green),
    beside the objective against each searched parameter (trials that did not finish: x, at
    their last value)."""
    panels = 1 + len(names)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    with _RENDER_LOCK:
        fig = Figure(figsize=(5.0 * cols, 3.8 * rows), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        fig.suptitle(title)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        ax = axes[0]
        ax.set_title(f"{curve} per epoch, every trial")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(curve)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for line in sorted(lines, key=lambda item: item["best"]):
            if not line["points"]:
                continue
            epochs, ys = zip(*line["points"], strict=True)
            if line["pruned"]:
                ax.plot(epochs, ys, color=PRUNED_COLOR, ls="--", lw=1, alpha=0.7)
                ax.plot(epochs[-1:], ys[-1:], color=PRUNED_COLOR, marker="x", ms=6)
            elif line["best"]:
                ax.plot(epochs, ys, color=BEST_COLOR, lw=2.2)
            else:
                ax.plot(epochs, ys, color=TRAIN_COLOR, lw=1, alpha=0.6)
        handles = [
            Line2D([], [], color=TRAIN_COLOR, label="trial"),
            Line2D([], [], color=PRUNED_COLOR, ls="--", marker="x", label="pruned"),
            Line2D([], [], color=BEST_COLOR, lw=2.2, label="best"),
        ]
        ax.legend(handles=handles, fontsize="small")
        for ax, name in zip(axes[1:], names, strict=False):
            ax.set_title(f"{metric} vs {name}", fontsize="medium")
            ax.set_xlabel(name)
            ax.set_ylabel(metric)
            ax.grid(True, alpha=0.3)
            values = [(p[name], v, done) for p, v, done in points if name in p]
            numbers = [
                float(x)
                for x, _, _ in values
                if isinstance(x, int | float) and not isinstance(x, bool)
            ]
            if len(numbers) == len(values):
                xs: list[float] = numbers
                if numbers and min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
                    ax.set_xscale("log")
            else:
                labels: list[str] = []
                for x, _, _ in values:
                    if _label(x) not in labels:
                        labels.append(_label(x))
                xs = [float(labels.index(_label(x))) for x, _, _ in values]
                ax.set_xticks(range(len(labels)), labels, fontsize="x-small", rotation=15)
            for done, color, marker in ((True, VAL_COLOR, "o"), (False, PRUNED_COLOR, "x")):
                chosen = [(x, v) for x, (_, v, d) in zip(xs, values, strict=True) if d == done]
                if chosen:
                    ax.scatter(*zip(*chosen, strict=True), s=18, color=color, marker=marker)
        for ax in axes[panels:]:
            ax.set_visible(False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _label(value: Any) -> str:
    """A short label for a chosen value (an optimizer object: its type and settings)."""
    if isinstance(value, dict):
        head = str(value.get("type", ""))
        rest = ", ".join(f"{k}={v}" for k, v in value.items() if k != "type")
        text = f"{head} {rest}".strip()
    else:
        text = str(value)
    return text if len(text) <= 28 else text[:27] + "…"
