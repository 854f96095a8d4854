"""Helpers every view uses: the request's session, its tenant, its JSON body."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, g, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from core.db import Database
from service.auth import authenticate
from service.errors import ApiError
from service.params import Paging, query
from service.params import flag as flag  # submit's ?dry_run=


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
    tenant_id: str | None = getattr(g._get_current_object(), "tenant_id", None)
    return authenticate(session) if tenant_id is None else tenant_id


def json_body() -> Any:
    """The decoded JSON body: 415 if it is not JSON, 400 if it does not parse."""
    current = request._get_current_object()  # type: ignore[attr-defined]
    if not current.is_json:
        raise ApiError(415, "send the body as JSON with Content-Type: application/json")
    return current.get_json()


def paging(page: Paging | None = None) -> dict[str, Any]:
    """The keyword arguments every listing takes: the session, tenant, `limit` and `cursor`."""
    page = query(Paging) if page is None else page
    return {"session": session(), "tenant_id": tenant(), "limit": page.limit, "cursor": page.cursor}


def png_response(etag: str, png: bytes, *, final: bool) -> ResponseReturnValue:
    """A plot as PNG with its ETag (304 when the client has it); a final one (it will not
    change any more) may be cached for a day, others are revalidated each time."""
    response = Response(png, mimetype="image/png")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, max-age=86400" if final else "no-cache"
    return response.make_conditional(request)
