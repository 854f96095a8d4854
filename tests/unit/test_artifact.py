"""Stored weights are loaded without pickle, and anything damaged is refused with a clear error."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pytest

from core.artifact import META_KEY, Artifact, ArtifactError

META = {
    "format": 1,
    "engine": "numpy",
    "task": "classification",
    "loss": "sparse_categorical_crossentropy",
    "n_features": 2,
    "classes": [0, 1],
    "n_targets": 1,
    "layers": [{"type": "dense", "units": 2, "activation": "softmax"}],
    "scaler": False,
}


def good() -> Artifact:
    return Artifact(
        dict(META),
        {"layers.0.kernel": np.ones((2, 2), np.float32), "layers.0.bias": np.zeros(2, np.float32)},
    )


def test_round_trip() -> None:
    loaded = Artifact.from_bytes(good().to_bytes())
    assert loaded.meta == META
    assert np.array_equal(loaded.arrays["layers.0.kernel"], np.ones((2, 2)))


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickle payload executed",))


def test_a_pickled_array_is_refused_and_not_executed(capsys: pytest.CaptureFixture[str]) -> None:
    buffer = io.BytesIO()
    meta = np.frombuffer(b"{}", dtype=np.uint8)
    contents: dict[str, Any] = {META_KEY: meta, "evil": np.array([Boom()], dtype=object)}
    np.savez(buffer, allow_pickle=True, **contents)
    with pytest.raises(ArtifactError):
        Artifact.from_bytes(buffer.getvalue())
    assert "executed" not in capsys.readouterr().out


def test_a_raw_pickle_is_refused() -> None:
    with pytest.raises(ArtifactError):
        Artifact.from_bytes(pickle.dumps({"layers.0.kernel": [1, 2]}))


@pytest.mark.parametrize("blob", [b"", b"garbage", b"PK\x03\x04broken zip"])
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(ArtifactError):
        Artifact.from_bytes(blob)


def test_wrong_shape_is_refused() -> None:
    artifact = good()
    artifact.arrays["layers.0.kernel"] = np.ones((3, 2), np.float32)
    with pytest.raises(ArtifactError, match=r"layers\.0\.kernel"):
        Artifact.from_bytes(artifact.to_bytes())


def test_missing_and_extra_arrays_are_refused() -> None:
    artifact = good()
    del artifact.arrays["layers.0.bias"]
    artifact.arrays["surprise"] = np.zeros(1, np.float32)
    with pytest.raises(ArtifactError, match="missing"):
        Artifact.from_bytes(artifact.to_bytes())


def test_unknown_layer_type_and_format_are_refused() -> None:
    artifact = good()
    artifact.meta["layers"] = [{"type": "lambda", "code": "import os"}]
    with pytest.raises(ArtifactError, match="unknown type"):
        Artifact.from_bytes(artifact.to_bytes())
    artifact = good()
    artifact.meta["format"] = 99
    with pytest.raises(ArtifactError, match="format"):
        Artifact.from_bytes(artifact.to_bytes())


def test_non_finite_weights_are_refused() -> None:
    artifact = good()
    artifact.arrays["layers.0.bias"] = np.array([np.nan, 0], np.float32)
    with pytest.raises(ArtifactError, match="non-finite"):
        Artifact.from_bytes(artifact.to_bytes())
