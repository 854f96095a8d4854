"""/v2: the Open Inference Protocol (KServe V2) over REST, so KServe, Triton and Seldon clients
use our models unchanged. `{model_name}` is a registered model's name (its `production` alias when
no version is given) or a model id. Errors answer `{"error": "..."}` as the protocol says."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from core import model_registry as registry
from core.models import Model
from core.queries import NotFound, owned
from service import inference, offload, predictions
from service import registry as http
from service.api.common import session, tenant
from service.errors import ApiError, not_found
from service.jsonutil import BadJSON, json_answer, loads
from service.monitoring import PREDICT_SECONDS
from service.predictions import load_predictor

bp = Blueprint("v2", __name__, url_prefix="/v2")
# The probes answer without a key, as /healthz and /readyz do (a kubelet sends none).
OPEN = frozenset({"v2.live", "v2.ready"})


@bp.before_request
def _authenticate() -> None:
    if request.endpoint not in OPEN:
        tenant()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> ResponseReturnValue:
    return jsonify({"error": message}), status, headers or {}


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> ResponseReturnValue:
    status = 400 if exc.status == 422 else exc.status  # the protocol's bad request is a 400
    details = "; ".join(f"{d['field']}: {d['message']}" for d in exc.details if "field" in d)
    message = f"{exc.message} ({details})" if details and status == 400 else exc.message
    return _error(status, message, exc.headers)


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> ResponseReturnValue:
    return _api_error(not_found(exc))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    return _error(exc.code or 500, exc.description or exc.name)


@bp.get("")
def server_metadata() -> ResponseReturnValue:
    return jsonify({"name": "trainsvc", "version": "1", "extensions": []})


@bp.get("/health/live")
def live() -> ResponseReturnValue:
    return jsonify({"live": True})


@bp.get("/health/ready")
def ready() -> ResponseReturnValue:
    """Ready when the database answers (models are loaded from it)."""
    try:
        session().execute(text("SELECT 1"))
    except Exception:
        return jsonify({"ready": False}), 503
    return jsonify({"ready": True})


def _served(name: str, version: str | None, *, describe: bool = False) -> inference.Served:
    """What `name` (and `version`) serves for this tenant; 404 saying what is missing.

    A name with a model id's shape is a model id (no registered name may have that shape).
    """
    tenant_id = tenant()
    if len(name) > registry.NAME_LENGTH or "\x00" in name:  # neither a name nor an id
        raise ApiError(404, f"no registered model or model id {name[:40]!r}")
    if registry.shaped_like_id(name):
        if version is not None:
            raise ApiError(404, f"model {name!r} is a model id, which has no versions")
        return _by_id(name, describe)
    if version is not None:
        if not (version.isascii() and version.isdigit()) or len(version) > 9:
            raise ApiError(404, f"registered model {name!r} has no version {version!r}")
        target = http.resolve(session, tenant_id, name, version=int(version))
    else:
        try:
            target = http.resolve(session, tenant_id, name, alias=registry.DEFAULT_ALIAS)
        except NotFound as exc:
            if exc.kind == "registered model":
                raise ApiError(404, f"no registered model or model id {name!r}") from None
            raise ApiError(
                404,
                f"registered model {name!r} has no '{registry.DEFAULT_ALIAS}' alias; "
                f"ask for a version: /v2/models/{name}/versions/N",
            ) from None
    versions = None
    engine = ""
    if describe:
        row = registry.get(session(), tenant_id, name)
        versions = [v.version for v in registry.versions(session(), row)]
        engine = owned(session(), Model, target.model_id, tenant_id, columns=(Model.engine,)).engine
    return inference.Served(name, target.version, versions, target.model_id, engine)


def _by_id(name: str, describe: bool) -> inference.Served:
    engine = ""
    if describe:
        try:
            engine = owned(session(), Model, name, tenant(), columns=(Model.engine,)).engine
        except NotFound:
            raise ApiError(404, f"no registered model or model id {name!r}") from None
    return inference.Served(name, None, None, name, engine)


def _predictor(served: inference.Served) -> Any:
    try:
        return load_predictor(
            served.model_id,
            session=session,
            tenant_id=tenant(),
            cache=current_app.extensions["trainsvc.models"],
        )
    except NotFound:
        raise ApiError(404, f"no registered model or model id {served.name!r}") from None


@bp.get("/models/<model_name>")
@bp.get("/models/<model_name>/versions/<version>")
def model_metadata(model_name: str, version: str | None = None) -> ResponseReturnValue:
    served = _served(model_name, version, describe=True)
    return jsonify(inference.metadata(served, _predictor(served)))


@bp.get("/models/<model_name>/ready")
@bp.get("/models/<model_name>/versions/<version>/ready")
def model_ready(model_name: str, version: str | None = None) -> ResponseReturnValue:
    _predictor(_served(model_name, version))
    return jsonify({"name": model_name, "ready": True})


@bp.post("/models/<model_name>/infer")
@bp.post("/models/<model_name>/versions/<version>/infer")
def infer(model_name: str, version: str | None = None) -> ResponseReturnValue:
    with PREDICT_SECONDS.time():
        if request.headers.get("Inference-Header-Content-Length") is not None:
            raise inference.Invalid(
                "binary tensor data is not supported; send JSON tensors "
                "(tritonclient: binary_data=False)"
            )
        try:
            payload = loads(request.get_data(cache=False))  # any Content-Type (tritonclient)
        except BadJSON as exc:
            raise inference.Invalid(f"the request body cannot be read: {exc}") from None
        served = _served(model_name, version)
        predictor = _predictor(served)
        max_rows = current_app.config["MAX_PREDICT_ROWS"]
        answer = offload.run_sized(request.content_length, _infer, predictor, payload, max_rows)
        outputs, request_id = answer
        body: dict[str, Any] = {"model_name": model_name}
        if served.version is not None:
            body["model_version"] = str(served.version)
        if request_id is not None:
            body["id"] = request_id
        body["outputs"] = outputs
        return json_answer(body)


def _infer(predictor: Any, payload: Any, max_rows: int) -> tuple[list[dict[str, Any]], str | None]:
    X, names, request_id = inference.parse_request(payload, predictor, max_rows)
    answer = predictions.predict(predictor, X)  # 422 → 400 for rows whose outputs overflow
    return inference.outputs(predictor, answer, names), request_id
