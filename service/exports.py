"""A stored model taken elsewhere: as ONNX (core.onnx_export) or as the `.npz` artifact itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from core.artifact import Artifact
from core.models import Model
from core.queries import owned
from service import offload
from service.params import Query
from service.predictions import load_stored

FORMATS = ("onnx", "npz")


class ExportQuery(Query):
    format: Literal["onnx", "npz"] = "onnx"


@dataclass
class Export:
    body: bytes
    filename: str
    mimetype: str
    headers: dict[str, str]


def export_model(model_id: str, fmt: str, *, session: Session, tenant_id: str) -> Export:
    """The tenant's model in format `fmt`; `NotFound` (404) for anyone else's."""
    row = owned(session, Model, model_id, tenant_id, columns=(Model.weights,))
    if fmt == "npz":
        # The artifact exactly as stored: named float arrays and, under `__meta__`, its JSON
        # description as UTF-8 bytes; np.load(..., allow_pickle=False) reads it.
        return Export(row.weights, f"model-{model_id}.npz", "application/octet-stream", {})
    from core.onnx_export import OPSET, export_onnx  # the `onnx` package: only when asked

    artifact = load_stored(model_id, Artifact.from_bytes, row.weights)
    body = offload.run(export_onnx, artifact, name=f"trainsvc-{model_id}")
    return Export(
        body, f"model-{model_id}.onnx", "application/octet-stream", {"X-ONNX-Opset": str(OPSET)}
    )
