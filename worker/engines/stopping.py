"""When to stop training: Keras's EarlyStopping rules and a wall-time budget, for both engines."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from core.spec import EarlyStopping
from worker.engines.base import EpochRecord


@dataclass(frozen=True)
class Verdict:
    best: bool  # this epoch is the best so far (always, without early stopping)
    stop: bool  # training should stop after this epoch


@dataclass
class StopPolicy:
    """Fed every epoch's record; says whether this epoch is the best so far and whether to stop.

    Early stopping follows keras.callbacks.EarlyStopping: an epoch improves on the best when it
    beats it by more than `min_delta` (lower for losses, higher for accuracies); training stops once
    `patience` epochs in a row have not improved. `max_seconds` stops training after the epoch
    during which the budget ran out.
    """

    early_stopping: EarlyStopping | None
    max_seconds: float | None
    epochs: int
    started: float = field(default_factory=time.monotonic)
    best_value: float = math.nan
    best_epoch: int = 0
    wait: int = 0
    stop_reason: str = "epochs"
    stopped_epoch: int = 0

    def observe(self, record: EpochRecord) -> Verdict:
        """Feed one epoch's record: is it the best so far, and should training stop after it."""
        best = self._improved(record)
        return Verdict(best=best, stop=self._should_stop(record))

    def _improved(self, record: EpochRecord) -> bool:
        rule = self.early_stopping
        if rule is None:
            self.best_epoch = record.epoch
            return True
        value = getattr(record, rule.monitor)
        if value is None or not math.isfinite(value):
            return False
        if math.isnan(self.best_value):
            better = True
        elif rule.mode == "min":
            better = value + rule.min_delta < self.best_value
        else:
            better = value - rule.min_delta > self.best_value
        if better:
            self.best_value, self.best_epoch, self.wait = value, record.epoch, 0
        else:
            self.wait += 1
        return better

    def _should_stop(self, record: EpochRecord) -> bool:
        self.stopped_epoch = record.epoch
        rule = self.early_stopping
        if rule is not None and self.wait > rule.patience - 1 and self.wait > 0:
            self.stop_reason = "early_stopping"
            return record.epoch < self.epochs
        if self.max_seconds is not None and time.monotonic() - self.started >= self.max_seconds:
            self.stop_reason = "max_seconds"
            return record.epoch < self.epochs
        if record.epoch >= self.epochs:
            self.stop_reason = "epochs"
        return False

    def state(self) -> dict[str, Any]:
        """Plain JSON to carry the policy over to a resumed attempt (the time spent included)."""
        return {
            "best_value": None if math.isnan(self.best_value) else self.best_value,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stop_reason": self.stop_reason,
            "stopped_epoch": self.stopped_epoch,
            "elapsed": time.monotonic() - self.started,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take up where `state()` left off."""
        best = state["best_value"]
        self.best_value = math.nan if best is None else float(best)
        self.best_epoch, self.wait = int(state["best_epoch"]), int(state["wait"])
        self.stop_reason, self.stopped_epoch = (
            str(state["stop_reason"]),
            int(state["stopped_epoch"]),
        )
        self.started = time.monotonic() - float(state["elapsed"])

    @property
    def restore_best(self) -> bool:
        return bool(self.early_stopping and self.early_stopping.restore_best_weights)

    def info(self) -> dict[str, Any]:
        stopped_early = self.stop_reason != "epochs"
        return {
            "stop_reason": self.stop_reason if stopped_early else "completed",
            "stopped_epoch": self.stopped_epoch,
            "best_epoch": self.best_epoch,
            "restored_best_weights": self.restore_best,
        }
