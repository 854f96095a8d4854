"""/v1/models: metadata and predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from service import offload, predictions
from service.api.common import json_body, session, tenant
from service.monitoring import PREDICT_SECONDS
from service.predictions import load_predictor, model_info, parse_instances
from service.schemas import Prediction

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
    with PREDICT_SECONDS.time():
        body = json_body()
        predictor = load_predictor(
            model_id,
            session=session,
            tenant_id=tenant(),
            cache=current_app.extensions["trainsvc.models"],
        )
        answer = predict_offloaded(predictor, body)
        return jsonify(Prediction(model_id=model_id, **answer).dump())


def predict_offloaded(predictor: Predictor, body: Any) -> dict[str, Any]:
    """The body's rows checked and predicted, off the event loop (CPU work; service.offload)."""
    max_rows = current_app.config["MAX_PREDICT_ROWS"]
    return offload.run_sized(request.content_length, _predict, predictor, body, max_rows)


def _predict(predictor: Predictor, body: Any, max_rows: int) -> dict[str, Any]:
    X = parse_instances(body, predictor.n_features, max_rows)
    return predictions.predict(predictor, X)  # 422 for rows whose outputs are not finite
