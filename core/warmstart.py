"""Warm start: a job may start from a finished model's weights (`"init": {"model_id": ID}`).

The model must be the tenant's, and its architecture the job's: the same number of features in,
and layer by layer the same type, output width and parameter count (so every weight has the
shape the job's network needs). The first layer that differs is named in a 422.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import PrivateAttr, ValidationInfo, model_validator
from sqlalchemy.orm import Session

from core.models import Model
from core.queries import find
from core.schema import Id, Strict


@dataclass(frozen=True)
class ModelInfo:
    """What validation needs to know of a finished model: its input width and its layers
    (each `{"name", "type", "output_shape", "params", ...}` as the model's metadata records)."""

    n_features: int
    layers: list[dict[str, Any]]


ModelLookup = Callable[[str], ModelInfo | None]
# The validation context key holding a function from model id to ModelInfo (or None).
MODELS_CONTEXT = "models"


class Init(Strict):
    """Where training starts from: a finished model of the tenant's."""

    model_id: Id
    _info: ModelInfo | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> Init:
        lookup = (info.context or {}).get(MODELS_CONTEXT)
        if lookup is not None:
            found = lookup(self.model_id)
            if found is None:
                raise ValueError(f"no model with id {self.model_id!r}")
            self._info = found
        return self

    @property
    def info(self) -> ModelInfo | None:
        return self._info


def _describe(layer: dict[str, Any]) -> str:
    width = layer["output_shape"][-1]
    return f"{layer['type']} with output width {width} and {layer['params']:,} parameters"


def architecture_problems(
    init: Init, n_features: int, layers: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """(field, message) for the first way the job's network differs from the model's."""
    found = init.info
    if found is None:
        return []
    if found.n_features != n_features:
        return [
            (
                "layers[0]",
                f"the model {init.model_id} takes {found.n_features} features and this job's "
                f"data has {n_features}: its first layer's weights cannot be reused",
            )
        ]
    for i, (ours, theirs) in enumerate(zip(layers, found.layers, strict=False)):
        if any(ours[key] != theirs.get(key) for key in ("type", "output_shape", "params")):
            return [
                (
                    f"layers[{i}]",
                    f"differs from layer {i} of the model {init.model_id}: this job's is "
                    f"{_describe(ours)}, the model's is {_describe(theirs)}",
                )
            ]
    if len(layers) != len(found.layers):
        i = min(len(layers), len(found.layers))
        return [
            (
                f"layers[{i}]" if i < len(layers) else "layers",
                f"this job has {len(layers)} layers and the model {init.model_id} has "
                f"{len(found.layers)}: the architecture must be the same",
            )
        ]
    return []


def model_lookup(session: Session, tenant_id: str) -> ModelLookup:
    """A function from model id to what a job spec's `init` needs to know of it (None: not
    the tenant's, or no such model)."""

    def lookup(model_id: str) -> ModelInfo | None:
        row = find(session, Model, model_id, tenant_id, columns=(Model.meta,))
        if row is None:
            return None
        return ModelInfo(int(row.meta["n_features"]), list(row.meta["layers"]))

    return lookup
