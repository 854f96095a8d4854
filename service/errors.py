"""The one error shape: {"error": {"code", "message", "details"}}, for every failure."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from core.db import connection_lost
from core.queries import NotFound
from service.schemas import ErrorBody, ErrorResponse

log = logging.getLogger(__name__)

# Seconds a client is told to wait when the database cannot be reached.
DATABASE_RETRY_AFTER = 5

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or HTTP_CODES.get(status, "error")
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def not_found(exc: NotFound) -> ApiError:
    """A lookup that found nothing for this tenant, as the HTTP error: 404 with its message."""
    return ApiError(404, str(exc))


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> ResponseReturnValue:
    """The one error shape, as a Flask response."""
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details or []))
    return jsonify(body.dump()), status, headers or {}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> ResponseReturnValue:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> ResponseReturnValue:
        return _api_error(not_found(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 400 and "JSON" in message:
            message = "the request body is not valid JSON"
        elif status == 415:
            message = "send the body as JSON with Content-Type: application/json"
        return error_response(status, HTTP_CODES.get(status, "error"), message)

    @app.errorhandler(sa_exc.SQLAlchemyError)
    def _database(exc: sa_exc.SQLAlchemyError) -> ResponseReturnValue:
        if not connection_lost(exc):
            return _unexpected(exc)
        # Down, restarting or cut off: a clear answer within DATABASE_TIMEOUT_SECONDS, no hang.
        log.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
        message = "the database cannot be reached now; try again shortly"
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
        return error_response(503, "unavailable", message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
