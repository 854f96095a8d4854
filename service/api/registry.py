"""/v1/registered-models: named models, numbered versions, aliases, history, and predictions
by name (`{name}@{alias}` or `{name}/versions/{n}`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, url_for
from flask.typing import ResponseReturnValue

from core import model_registry as registry
from service import registry as http
from service.api.common import json_body, paging, session, tenant
from service.api.models import predict_offloaded
from service.errors import ApiError
from service.jsonutil import json_answer
from service.monitoring import PREDICT_SECONDS
from service.params import Paging, query
from service.predictions import load_predictor
from service.schemas import (
    ModelVersionList,
    Prediction,
    RegisteredModelList,
    RegistryHistory,
)

bp = Blueprint("registry", __name__, url_prefix="/v1/registered-models")


@bp.before_request
def _authenticate() -> None:
    tenant()


def _actor() -> registry.Actor:
    return http.actor(session(), tenant())


def _model(name: str) -> ResponseReturnValue:
    row = registry.get(session(), tenant(), name)
    return jsonify(http.model_out(session(), row).dump())


@bp.post("")
def create() -> ResponseReturnValue:
    given = http.body(http.CreateRegisteredModel, json_body())
    with http.change(session()):
        registry.create(session(), _actor(), given.name, given.description)
    location = url_for("registry.read", name=given.name)
    response = _model(given.name)
    return response, 201, {"Location": location}  # type: ignore[return-value]


@bp.get("")
def index() -> ResponseReturnValue:
    items, next_cursor = registry.listing(**paging())
    out = [http.model_out(session(), row) for row in items]
    return jsonify(RegisteredModelList(items=out, next_cursor=next_cursor).dump())


@bp.get("/<name>")
def read(name: str) -> ResponseReturnValue:
    return _model(http.path_name(name))


@bp.patch("/<name>")
def update(name: str) -> ResponseReturnValue:
    name = http.path_name(name)
    given = http.body(http.UpdateRegisteredModel, json_body())
    with http.change(session()):
        registry.describe(session(), _actor(), name, given.description)
    return _model(name)


@bp.delete("/<name>")
def remove(name: str) -> ResponseReturnValue:
    name = http.path_name(name)
    with http.change(session()):
        registry.remove(session(), _actor(), name)
    return "", 204


@bp.post("/<name>/versions")
def add_version(name: str) -> ResponseReturnValue:
    name = http.path_name(name)
    given = http.body(http.CreateVersion, json_body())
    with http.change(session()):
        version = registry.add_version(session(), _actor(), name, given.model_id).version
    row = registry.get(session(), tenant(), name)
    out = next(v for v in http.versions_out(session(), row) if v.version == version)
    location = url_for("registry.read_version", name=name, number=version)
    return jsonify(out.dump()), 201, {"Location": location}


@bp.get("/<name>/versions")
def list_versions(name: str) -> ResponseReturnValue:
    row = registry.get(session(), tenant(), http.path_name(name))
    return jsonify(ModelVersionList(items=http.versions_out(session(), row)).dump())


@bp.get("/<name>/versions/<int:number>")
def read_version(name: str, number: int) -> ResponseReturnValue:
    row = registry.get(session(), tenant(), http.path_name(name))
    registry.version_of(session(), row, number)
    out = next(v for v in http.versions_out(session(), row) if v.version == number)
    return jsonify(out.dump())


@bp.delete("/<name>/versions/<int:number>")
def delete_version(name: str, number: int) -> ResponseReturnValue:
    name = http.path_name(name)
    with http.change(session()):
        registry.delete_version(session(), _actor(), name, number)
    return "", 204


@bp.put("/<name>/aliases/<alias>")
def set_alias(name: str, alias: str) -> ResponseReturnValue:
    name, alias = http.path_name(name), http.path_alias(alias)
    given = http.body(http.SetAlias, json_body())
    with http.change(session()):
        registry.set_alias(session(), _actor(), name, alias, given.version)
    return _model(name)


@bp.delete("/<name>/aliases/<alias>")
def delete_alias(name: str, alias: str) -> ResponseReturnValue:
    name, alias = http.path_name(name), http.path_alias(alias)
    with http.change(session()):
        registry.delete_alias(session(), _actor(), name, alias)
    return "", 204


@bp.get("/<name>/history")
def history(name: str) -> ResponseReturnValue:
    page = query(Paging)
    row = registry.get(session(), tenant(), http.path_name(name))
    before = None
    if page.cursor is not None:
        if not (page.cursor.isascii() and page.cursor.isdigit()):
            raise ApiError(422, "cursor: must be a cursor this listing gave")
        before = int(page.cursor)
    events, cursor = registry.history(session(), row, limit=page.limit, before=before)
    out = RegistryHistory(
        name=row.name,
        items=[http.event_out(e) for e in events],
        next_cursor=None if cursor is None else str(cursor),
    )
    return jsonify(out.dump())


@bp.post("/<name>@<alias>/predict")
def predict_alias(name: str, alias: str) -> ResponseReturnValue:
    name, alias = http.path_name(name), http.path_alias(alias)
    body = json_body()  # an unreadable body is a 400 before any lookup, as on /v1/models
    return _predict(http.resolve(session, tenant(), name, alias=alias), body)


@bp.post("/<name>/versions/<int:number>/predict")
def predict_version(name: str, number: int) -> ResponseReturnValue:
    name = http.path_name(name)
    body = json_body()
    return _predict(http.resolve(session, tenant(), name, version=number), body)


def _predict(target: registry.Resolved, body: Any) -> ResponseReturnValue:
    """The same answer as /v1/models/{id}/predict, from the version the name resolved to."""
    with PREDICT_SECONDS.time():
        predictor = load_predictor(
            target.model_id,
            session=session,
            tenant_id=tenant(),
            cache=current_app.extensions["trainsvc.models"],
        )
        answer = predict_offloaded(predictor, body)
        headers = {"X-Model-Version": str(target.version), "X-Model-Id": target.model_id}
        return (
            json_answer(Prediction.model_construct(model_id=target.model_id, **answer).dump()),
            200,
            headers,
        )
