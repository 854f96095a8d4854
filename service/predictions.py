"""Serving predictions: stored models loaded once into a bounded in-memory cache."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from sqlalchemy.orm import Session

from core.artifact import ArtifactError
from core.lru import LRU
from core.models import Model
from core.queries import NotFound, owned
from core.runtime import NotFinite, Predictor, Rows
from core.schema import Strict
from core.spec import field_path
from service.errors import ApiError
from service.schemas import ModelOut

Loaded = TypeVar("Loaded")


class PredictRequest(Strict):
    """A predict body: numbers as JSON numbers (a string or a boolean is not one)."""

    instances: list[list[float]] = Field(min_length=1)


class ModelCache(LRU[str, tuple[str, Predictor]]):
    """An LRU of loaded predictors, keyed by model id, remembering each model's tenant."""

    def put(self, model_id: str, tenant_id: str, predictor: Predictor) -> None:
        """Remember the tenant's loaded model."""
        self.set(model_id, (tenant_id, predictor))


def load_predictor(
    model_id: str,
    *,
    session: Session | Callable[[], Session],
    tenant_id: str,
    cache: ModelCache,
) -> Predictor:
    """The tenant's model, from the cache or the database; `NotFound` (404) for anyone else's.

    `session` may be a function giving one, called only when the model is not in the cache.
    """
    cached = cache.get(model_id)
    if cached is not None:
        owner, predictor = cached
        if owner != tenant_id:
            raise NotFound.of(Model, model_id)
        return predictor
    database = session if isinstance(session, Session) else session()
    row = owned(database, Model, model_id, tenant_id, columns=(Model.weights,))
    predictor = load_stored(model_id, Predictor.from_bytes, row.weights)
    cache.put(model_id, tenant_id, predictor)
    return predictor


def load_stored(model_id: str, load: Callable[[bytes], Loaded], weights: bytes) -> Loaded:
    """`load(weights)`; a stored model that cannot be loaded is a 500 `model_unreadable`."""
    try:
        return load(weights)
    except ArtifactError as exc:
        raise ApiError(
            500, f"the stored model {model_id} cannot be loaded: {exc}", code="model_unreadable"
        ) from None


def model_info(model_id: str, *, session: Session, tenant_id: str) -> ModelOut:
    """The tenant's model's metadata (its weights are not loaded); `NotFound` (404) otherwise."""
    return ModelOut.from_row(owned(session, Model, model_id, tenant_id, columns=DESCRIBED))


# What a model's metadata reads: everything but the weights.
DESCRIBED = (Model.job_id, Model.engine, Model.task, Model.meta, Model.evaluation)


NUMBERS = frozenset((int, float))  # JSON numbers as json.loads gives them


def _plain_rows(payload: Any, n_features: int, max_rows: int) -> list[list[float]] | None:
    """The rows of an ordinary valid body ({"instances": rows of `n_features` JSON numbers}),
    read without pydantic (most of a one-row request's parsing cost); None for anything else,
    which `parse_instances` then checks and explains."""
    if type(payload) is not dict or len(payload) != 1:
        return None
    rows = payload.get("instances")
    if type(rows) is not list or not 0 < len(rows) <= max_rows:
        return None
    try:
        for row in rows:
            # Each value's exact type and finiteness, in C: a bool is not an int here, a string
            # not a number, NaN and Infinity (which json.loads reads) not finite.
            if (
                type(row) is not list
                or len(row) != n_features
                or not NUMBERS.issuperset(map(type, row))
                or not all(map(math.isfinite, row))
            ):
                return None
    except OverflowError:  # an integer past float64
        return None
    return rows


def parse_instances(payload: Any, n_features: int, max_rows: int) -> list[list[float]]:
    """The rows to predict (lists of finite numbers, as `Predictor.predict` takes them); 422
    saying what is wrong with any other body."""
    plain = _plain_rows(payload, n_features, max_rows)
    if plain is not None:
        return plain
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
    return body.instances


def predict(predictor: Predictor, X: Rows) -> dict[str, Any]:
    """The model's predictions for `X`; 422 naming each row whose outputs are not finite."""
    try:
        return predictor.predict(X)
    except NotFinite as exc:
        raise ApiError(
            422,
            f"the model's outputs are not finite numbers for {len(exc.rows)} of the instances "
            "(their values are beyond what the model can compute with)",
            details=[
                {"field": f"instances[{row}]", "message": "the model's outputs are not finite"}
                for row in exc.rows
            ],
        ) from None
