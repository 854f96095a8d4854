"""What every engine takes and gives: prepared data in, epoch records out, arrays at the end."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
class PreparedData:
    """Split, scaled and encoded arrays; features are float32, targets encoded for the loss."""

    task: str
    n_features: int
    classes: list[Any]
    X_fit: NDArray
    T_fit: NDArray
    X_val: NDArray | None
    T_val: NDArray | None
    X_test: NDArray
    T_test: NDArray
    scaler_mean: NDArray | None = None
    scaler_scale: NDArray | None = None


@dataclass
class EpochRecord:
    epoch: int  # 1-based, as people count epochs
    loss: float
    accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"epoch": self.epoch, "loss": self.loss}
        for name in ("accuracy", "val_loss", "val_accuracy"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["seconds"] = self.seconds
        return out


# Called after each epoch; may raise (a cancelled job) to stop training.
EpochCallback = Callable[[EpochRecord], None]


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


def as_float32(x: NDArray) -> NDArray:
    return np.ascontiguousarray(x, dtype=np.float32)
