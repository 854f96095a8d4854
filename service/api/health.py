"""Liveness and readiness."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from service.api.common import session
from service.schemas import Health

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(Health(status="ok").dump())


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    checks = {}
    # Both checks at once (a thread: a greenlet under gunicorn's gevent), so a host cut off from
    # the data host is reported after the longer of the two timeouts, not after their sum.
    with ThreadPoolExecutor(max_workers=1) as pool:
        broker = pool.submit(current_app.extensions["trainsvc.queue"].ready)
        try:
            session().execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        checks["broker"] = "ok" if broker.result() else "unreachable"
    ready = all(v == "ok" for v in checks.values())
    health = Health(status="ready" if ready else "not ready", checks=checks)
    return jsonify(health.dump()), 200 if ready else 503
