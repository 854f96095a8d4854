"""GET /metrics: Prometheus exposition, behind METRICS_TOKEN (or any API key when it is unset)."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from core.settings import Settings
from service.api.common import tenant
from service.auth import check_failures, count_failure
from service.errors import ApiError
from service.monitoring import REQUESTS, exposition

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    settings: Settings = current_app.config["TRAINSVC_SETTINGS"]
    if settings.metrics_token:
        _check_token(settings.metrics_token)
    else:
        tenant()  # any API key; set METRICS_TOKEN when tenants must not see the totals
    body = exposition(current_app.extensions["trainsvc.metrics"])
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def _check_token(expected: str) -> None:
    """401 unless the request carries `expected`; a wrong one counts as a failed authentication."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if given:
        check_failures()
        if hmac.compare_digest(given.encode(), expected.encode()):
            return
        count_failure()
    raise ApiError(
        401, "send Authorization: Bearer <METRICS_TOKEN>", headers={"WWW-Authenticate": "Bearer"}
    )


# The counter of each (method, route, status) seen: `labels` checks and locks on every call.
_counters: dict[tuple[str, str, int], Any] = {}
# Methods counted by name; any other token a client sends counts as "OTHER" (labels stay few).
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def count_request(response: Response) -> Response:
    """Count every answered request by its route template (bounded), method and status."""
    current = request._get_current_object()  # type: ignore[attr-defined]
    url_rule, method = current.url_rule, current.method
    rule = url_rule.rule if url_rule is not None else "unmatched"
    key = (method if method in METHODS else "OTHER", rule, response.status_code)
    counter = _counters.get(key)
    if counter is None:
        counter = _counters[key] = REQUESTS.labels(key[0], rule, str(key[2]))
    counter.inc()
    return response
