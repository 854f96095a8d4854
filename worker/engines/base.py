"""What every engine takes and gives: prepared data in, epoch records out, arrays at the end."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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
class Snapshot:
    """What an engine needs to go on training after `epoch` exactly where it stopped."""

    epoch: int
    arrays: dict[str, NDArray]  # weights (`layers.<i>.<name>`), optimizer slots, best weights
    state: dict[str, Any]  # plain JSON: the random generator, the optimizer's step, stop policy


class Checkpoints(Protocol):
    """Where an engine stores its snapshots; asked at each epoch's end whether one is due."""

    def due(self) -> bool: ...

    def save(self, snapshot: Snapshot) -> None: ...


class NoCheckpoints:
    """Never due: training that stores no checkpoints."""

    def due(self) -> bool:
        return False

    def save(self, snapshot: Snapshot) -> None:
        raise AssertionError("no checkpoint is ever due")


@dataclass
class Start:
    """How training starts: afresh, from a checkpoint (after the epochs already recorded), or
    from a finished model's weights (warm start); and where it stores checkpoints."""

    resume: Snapshot | None = None
    history: list[EpochRecord] = field(default_factory=list)  # the epochs up to resume.epoch
    init: dict[str, NDArray] | None = None  # artifact-named arrays of the model to start from
    checkpoints: Checkpoints = field(default_factory=NoCheckpoints)

    @property
    def first_epoch(self) -> int:
        return 1 if self.resume is None else self.resume.epoch + 1


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
