"""/v1/models: metadata and predictions."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from core.models import Model
from core.queries import owned
from service import exports, offload, plots, predictions
from service.api.common import json_body, png_response, session, tenant
from service.errors import ApiError
from service.jsonutil import json_answer
from service.monitoring import PREDICT_SECONDS
from service.params import query
from service.predictions import load_predictor, model_info, parse_instances

if TYPE_CHECKING:
    from core.runtime import Predictor

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.before_request
def _authenticate() -> None:
    tenant()


@bp.get("/<model_id>")
def read(model_id: str) -> ResponseReturnValue:
    return jsonify(model_info(model_id, session=session(), tenant_id=tenant()).dump())


@bp.post("/<model_id>/predict")
def predict(model_id: str) -> ResponseReturnValue:
    started = perf_counter()
    try:
        body = json_body()
        predictor = load_predictor(
            model_id,
            session=session,
            tenant_id=tenant(),
            cache=current_app.extensions["trainsvc.models"],
        )
        answer = predict_offloaded(predictor, body)
        # The runtime's own answer as `Prediction` dumps it, built without pydantic (its floats
        # are already JSON's; "probabilities" only for classifiers; the OpenAPI test checks
        # the shape against the document).
        return json_answer({"model_id": model_id, **answer})
    finally:  # as PREDICT_SECONDS.time() would, without its timer object per request
        PREDICT_SECONDS.observe(perf_counter() - started)


def predict_offloaded(predictor: Predictor, body: Any) -> dict[str, Any]:
    """The body's rows checked and predicted: off the event loop (CPU work; service.offload)
    unless the body is small enough that the hop to a thread would cost more than the work."""
    max_rows = current_app.config["MAX_PREDICT_ROWS"]
    return offload.run_sized(request.content_length, _predict, predictor, body, max_rows)


def _predict(predictor: Predictor, body: Any, max_rows: int) -> dict[str, Any]:
    X = parse_instances(body, predictor.n_features, max_rows)
    return predictions.predict(predictor, X)  # 422 for rows whose outputs are not finite


# -- evaluation and export --------------------------------------------------------------------


@bp.get("/<model_id>/evaluation.png")
def evaluation_plot(model_id: str) -> ResponseReturnValue:
    """The confusion matrix (classification) or residual plot (regression) as PNG."""
    return evaluation_plot_response(model_id, tenant())


def evaluation_plot_response(model_id: str, tenant_id: str) -> ResponseReturnValue:
    """The tenant's model's evaluation figure; cacheable (it never changes)."""
    row = owned(session(), Model, model_id, tenant_id, columns=(Model.job_id, Model.evaluation))
    if row.evaluation is None:
        raise ApiError(
            404,
            f"model {model_id} has no evaluation (it was trained before evaluations were kept)",
            code="no_evaluation",
        )
    etag, png = plots.evaluation_plot(
        model_id,
        row.evaluation,
        f"Model {model_id[:8]}… on its test split",
        cache=current_app.extensions["trainsvc.plots"],
    )
    return png_response(etag, png, final=True)


@bp.get("/<model_id>/export")
def export(model_id: str) -> ResponseReturnValue:
    """The model as ONNX (`?format=onnx`, the default) or as its stored `.npz` artifact."""
    fmt = query(exports.ExportQuery).format
    done = exports.export_model(model_id, fmt, session=session(), tenant_id=tenant())
    response = Response(done.body, mimetype=done.mimetype, headers=done.headers)
    response.headers["Content-Disposition"] = f'attachment; filename="{done.filename}"'
    return response
