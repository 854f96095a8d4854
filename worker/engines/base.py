"""What every engine takes and gives: prepared data in, epoch records out, arrays at the end."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray


class Diverged(Exception):
    """The training loss stopped being finite."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"the training loss became {loss} at epoch {epoch}; try a smaller learning rate, "
            "standardized inputs, or a different initializer"
        )
        self.epoch = epoch


@dataclass
class EpochRecord:
    epoch: int  # 1-based, as people count epochs
    loss: float
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


# Called after each epoch; may raise (a cancelled job) to stop training.
EpochCallback = Callable[[EpochRecord], None]
# Called between batches; raises (a cancelled job) to stop training within the epoch.
Check = Callable[[], None]


def no_check() -> None:
    """A Check that never stops training."""


@dataclass
class EngineResult:
    """A trained network, as the portable artifact describes it, plus its history."""

    layers: list[dict[str, Any]]
    arrays: dict[str, NDArray]
    history: list[EpochRecord]
    test_loss: float
    test_accuracy: float | None
    info: dict[str, Any] = field(default_factory=dict)


def check_finite(epoch: int, loss: float) -> None:
    if not math.isfinite(loss):
        raise Diverged(epoch, loss)


def finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
