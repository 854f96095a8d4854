"""Serving predictions: stored models loaded once into a bounded in-memory cache."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.artifact import ArtifactError
from core.models import Model
from core.runtime import Predictor
from core.spec import field_path
from service.errors import ApiError


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    instances: list[list[float]] = Field(min_length=1)


class ModelCache:
    """An LRU of loaded predictors, keyed by model id, remembering each model's tenant."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._items: OrderedDict[str, tuple[str, Predictor]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> tuple[str, Predictor] | None:
        with self._lock:
            item = self._items.get(model_id)
            if item is not None:
                self._items.move_to_end(model_id)
            return item

    def put(self, model_id: str, tenant_id: str, predictor: Predictor) -> None:
        with self._lock:
            self._items[model_id] = (tenant_id, predictor)
            self._items.move_to_end(model_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def load_predictor(
    model_id: str, *, session: Session, tenant_id: str, cache: ModelCache
) -> Predictor:
    """The tenant's model, from the cache or the database; 404 for anyone else's."""
    cached = cache.get(model_id)
    if cached is not None:
        owner, predictor = cached
        if owner != tenant_id:
            raise ApiError(404, f"no model with id {model_id!r}")
        return predictor
    row = session.scalar(select(Model).where(Model.id == model_id, Model.tenant_id == tenant_id))
    if row is None:
        raise ApiError(404, f"no model with id {model_id!r}")
    try:
        predictor = Predictor.from_bytes(row.weights)
    except ArtifactError as exc:
        raise ApiError(
            500, f"the stored model {model_id} cannot be loaded: {exc}", code="model_unreadable"
        ) from None
    cache.put(model_id, tenant_id, predictor)
    return predictor


def parse_instances(payload: Any, n_features: int, max_rows: int) -> np.ndarray:
    if not isinstance(payload, dict):
        raise ApiError(
            422,
            "the body must be a JSON object with 'instances'",
            details=[{"field": "$", "message": "expected an object"}],
        )
    try:
        body = PredictRequest.model_validate(payload)
    except ValidationError as exc:
        details = [
            {"field": field_path(e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise ApiError(422, "the prediction request is not valid", details=details) from None
    if len(body.instances) > max_rows:
        raise ApiError(
            422,
            f"at most {max_rows} instances per request",
            details=[{"field": "instances", "message": f"{len(body.instances)} rows sent"}],
        )
    for i, row in enumerate(body.instances):
        if len(row) != n_features:
            raise ApiError(
                422,
                f"the model takes {n_features} features per instance",
                details=[{"field": f"instances[{i}]", "message": f"has {len(row)} features"}],
            )
    return np.asarray(body.instances, dtype=np.float64)


def model_to_dict(model: Model) -> dict[str, Any]:
    meta = model.meta
    return {
        "id": model.id,
        "job_id": model.job_id,
        "engine": model.engine,
        "task": model.task,
        "n_features": meta["n_features"],
        "classes": meta["classes"] if model.task == "classification" else None,
        "layers": meta["layers"],
        "params": meta["params"],
        "metrics": meta["metrics"],
    }
