"""Learning-curve figures as PNG, rendered with matplotlib's Agg canvas, and a cache for them."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sqlalchemy.orm import Session

from core.lru import LRU
from core.models import TERMINAL_STATUSES, Job
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
