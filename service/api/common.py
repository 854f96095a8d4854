"""Helpers every view uses: the request's session, its tenant, its JSON body."""

from __future__ import annotations

from typing import Any

from flask import current_app, g, request
from sqlalchemy.orm import Session

from core.db import Database
from service.auth import authenticate
from service.errors import ApiError


def db() -> Database:
    database: Database = current_app.extensions["trainsvc.db"]
    return database


def session() -> Session:
    """One session per request, closed at teardown."""
    if "db_session" not in g:
        g.db_session = db().session()
    current: Session = g.db_session
    return current


def close_session(_exc: BaseException | None = None) -> None:
    current = g.pop("db_session", None)
    if current is not None:
        current.close()


def tenant() -> str:
    """The authenticated tenant (authenticating on first use)."""
    if "tenant_id" not in g:
        authenticate(session)
    tenant_id: str = g.tenant_id
    return tenant_id


def json_body() -> Any:
    """The decoded JSON body: 415 if it is not JSON, 400 if it does not parse."""
    if not request.is_json:
        raise ApiError(415, "send the body as JSON with Content-Type: application/json")
    return request.get_json()


def flag(name: str) -> bool:
    value = request.args.get(name, "false").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ApiError(
        422, f"{name} must be true or false", details=[{"field": name, "message": value}]
    )


def page_limit(default: int = 20, most: int = 100) -> int:
    """The `limit` query parameter of a listing: a whole number from 1 to `most`."""
    raw = request.args.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ApiError(
            422,
            f"limit must be a whole number from 1 to {most}",
            details=[{"field": "limit", "message": raw}],
        )
    return int(raw)


def paging() -> dict[str, Any]:
    """The keyword arguments every listing takes: the session, tenant, `limit` and `cursor`."""
    return {
        "session": session(),
        "tenant_id": tenant(),
        "limit": page_limit(),
        "cursor": request.args.get("cursor") or None,
    }
