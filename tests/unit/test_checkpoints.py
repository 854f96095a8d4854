"""Checkpoints at the engine level: a run resumed from any epoch's snapshot ends exactly where an
uninterrupted one does (NumPy), and a snapshot survives the trip through its stored form."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from core.datasets import prepare
from core.models import JobCheckpoint
from core.spec import parse_spec
from tests.support import overfitting_spec
from worker import checkpoints
from worker.checkpoints import CheckpointError
from worker.engines.base import EpochRecord, Snapshot, Start
from worker.engines.numpy_engine.training import train


class Every:
    """A checkpoint store that is due every epoch and keeps every snapshot in memory."""

    def __init__(self) -> None:
        self.saved: list[Snapshot] = []

    def due(self) -> bool:
        return True

    def save(self, snapshot: Snapshot) -> None:
        self.saved.append(snapshot)


def stored(snapshot: Snapshot) -> Snapshot:
    """Through the bytes and JSON a checkpoint row holds, and back."""
    row = JobCheckpoint(
        job_id="j",
        attempt=1,
        epoch=snapshot.epoch,
        state=json.loads(json.dumps(snapshot.state, allow_nan=False)),
        arrays=checkpoints.to_bytes(snapshot),
    )
    return checkpoints.from_row(row, snapshot.state["engine"])


SPECS: dict[str, dict[str, Any]] = {
    # Dropout (draws from the generator every batch), batch norm (moving statistics), Adam
    # (two slots and its step count), early stopping with best weights kept.
    "adam+dropout+early stopping": {
        **overfitting_spec("numpy", epochs=30),
        "layers": [
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "batch_norm"},
            {"type": "dropout", "rate": 0.3},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
        "early_stopping": {"monitor": "val_loss", "patience": 50, "restore_best_weights": True},
    },
    "sgd momentum": {
        **overfitting_spec("numpy", epochs=12),
        "optimizer": {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9},
        "early_stopping": None,
    },
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_numpy_run_resumed_from_a_checkpoint_is_bit_identical(name: str) -> None:
    spec = parse_spec(SPECS[name])
    data = prepare(spec)
    epochs: list[EpochRecord] = []
    store = Every()
    whole = train(spec, data, epochs.append, start=Start(checkpoints=store))
    assert len(store.saved) == len(whole.history) - 1  # none after the last epoch
    for at in (1, len(whole.history) // 2, len(whole.history) - 1):
        snapshot = stored(store.saved[at - 1])
        assert snapshot.epoch == at
        later: list[EpochRecord] = []
        resumed = train(spec, data, later.append, start=Start(resume=snapshot, history=epochs[:at]))
        assert [r.epoch for r in later] == list(range(at + 1, len(whole.history) + 1))
        assert [r.loss for r in resumed.history] == [r.loss for r in whole.history]
        assert resumed.arrays.keys() == whole.arrays.keys()
        for key, value in whole.arrays.items():
            assert resumed.arrays[key].tobytes() == value.tobytes(), key
        assert resumed.info == whole.info
        assert resumed.test_loss == whole.test_loss


def test_a_checkpoint_of_another_engine_or_damaged_is_refused() -> None:
    snapshot = Snapshot(3, {"layers.0.kernel": np.ones((2, 2), np.float32)}, {"engine": "keras"})
    row = JobCheckpoint(epoch=3, state=snapshot.state, arrays=checkpoints.to_bytes(snapshot))
    with pytest.raises(CheckpointError, match="numpy"):
        checkpoints.from_row(row, "numpy")
    row.arrays = b"PK\x03\x04 not a zip"
    with pytest.raises(CheckpointError):
        checkpoints.from_row(row, "keras")


def test_an_object_array_is_never_unpickled() -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([{"a": 1}], dtype=object))
    row = JobCheckpoint(epoch=1, state={"engine": "numpy"}, arrays=buffer.getvalue())
    with pytest.raises(CheckpointError):
        checkpoints.from_row(row, "numpy")


def test_keras_resumes_after_the_checkpoint_s_epoch_with_its_weights_and_optimizer() -> None:
    from worker.engines.keras_engine import fit_model

    spec = parse_spec({**SPECS["sgd momentum"], "engine": "keras", "epochs": 4})
    data = prepare(spec)
    store = Every()
    epochs: list[EpochRecord] = []
    fit_model(spec, data, epochs.append, start=Start(checkpoints=store))
    snapshot = stored(store.saved[1])  # after epoch 2
    assert snapshot.epoch == 2 and snapshot.state["engine"] == "keras"
    later: list[EpochRecord] = []
    model, history, _ = fit_model(
        spec, data, later.append, start=Start(resume=snapshot, history=epochs[:2])
    )
    assert [r.epoch for r in later] == [3, 4]
    assert [r.epoch for r in history] == [1, 2, 3, 4]
    steps = -(-len(data.X_fit) // spec.batch_size)
    assert int(model.optimizer.iterations.numpy()) == 4 * steps  # the step count carried over
    assert later[0].loss < 0.9 * epochs[0].loss  # it went on from trained weights
