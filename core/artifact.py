"""The portable model artifact: named float arrays plus a JSON description, as `.npz` bytes.

Both engines export this, the NumPy runtime serves it, and loading it never unpickles anything:
`np.load(..., allow_pickle=False)`, then every array's name, dtype and shape is checked against
the described architecture before it is used.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from core.layers import LayerSpec, read_described

FORMAT_VERSION = 1
META_KEY = "__meta__"
MAX_ARTIFACT_BYTES = 512 * 1024 * 1024


class ArtifactError(ValueError):
    """A stored model that cannot be used: damaged, tampered with, or of an unknown format."""


@dataclass
class Artifact:
    meta: dict[str, Any]
    arrays: dict[str, NDArray]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        contents: dict[str, Any] = dict(self.arrays)
        contents[META_KEY] = np.frombuffer(json.dumps(self.meta).encode(), dtype=np.uint8)
        np.savez(buffer, allow_pickle=False, **contents)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Artifact:
        """Load and check an artifact; raises ArtifactError for anything unexpected."""
        if len(blob) > MAX_ARTIFACT_BYTES:
            raise ArtifactError("the stored model is larger than any model this service makes")
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise ArtifactError(f"the stored model cannot be read: {exc}") from None
        raw_meta = arrays.pop(META_KEY, None)
        if raw_meta is None or raw_meta.dtype != np.uint8 or raw_meta.ndim != 1:
            raise ArtifactError("the stored model has no description")
        try:
            meta = json.loads(raw_meta.tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArtifactError("the stored model's description is not valid JSON") from None
        artifact = cls(meta, arrays)
        artifact.check()
        return artifact

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """The name and shape of every array the described architecture needs."""
        meta = self.meta
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise ArtifactError(f"unsupported model format {meta.get('format')!r}")
        try:
            width = int(meta["n_features"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError("the stored model's description is incomplete") from None
        shapes: dict[str, tuple[int, ...]] = {}
        if meta.get("scaler"):
            shapes["scaler.mean"] = shapes["scaler.scale"] = (width,)
        for i, layer in enumerate(self.layers()):
            for name, shape in layer.weights(width).items():
                shapes[f"layers.{i}.{name}"] = shape
            width = layer.out_width(width)
        return shapes

    def layers(self) -> list[LayerSpec]:
        """The described layers, read back into their spec models."""
        try:
            described = list(self.meta["layers"])
        except (KeyError, TypeError):
            raise ArtifactError("the stored model's description is incomplete") from None
        layers = []
        for i, layer in enumerate(described):
            try:
                layers.append(read_described(layer))
            except ValueError as exc:
                raise ArtifactError(
                    f"layer {i} of the stored model cannot be read: {exc}"
                ) from None
        return layers

    def layer_arrays(self, index: int, layer: LayerSpec, width: int) -> dict[str, NDArray]:
        """Layer `index`'s own arrays, by their short names (`kernel`, `gamma`, …)."""
        return {name: self.arrays[f"layers.{index}.{name}"] for name in layer.weights(width)}

    def check(self) -> None:
        expected = self.expected_shapes()
        if set(expected) != set(self.arrays):
            missing = sorted(set(expected) - set(self.arrays))
            extra = sorted(set(self.arrays) - set(expected))
            raise ArtifactError(f"the stored arrays do not match: missing {missing}, extra {extra}")
        for name, shape in expected.items():
            array = self.arrays[name]
            if array.dtype.kind != "f" or array.shape != shape:
                raise ArtifactError(
                    f"array {name} is {array.dtype}{list(array.shape)}, expected float{list(shape)}"
                )
            if not np.isfinite(array).all():
                raise ArtifactError(f"array {name} has non-finite values")


def describe_layers(layers: Sequence[LayerSpec]) -> list[dict[str, Any]]:
    """A spec's layers as the artifact records them: only what inference needs."""
    return [layer.describe() for layer in layers]
