"""The dashboard's sign-in: an API key checked once, then the tenant in the signed session cookie.

The cookie holds the tenant and the SHA-256 of the key (never the key), so revoking the key
also ends the dashboard sessions made with it. Every state-changing dashboard request carries a
per-session CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from flask import Flask, request, session

from service.api.common import session as db_session
from service.auth import hash_key, tenant_for_digest, tenant_for_key
from service.errors import ApiError

SESSION_HOURS = 12


def configure(app: Flask, secret_key: str, *, secure: bool = False) -> None:
    """Sign the session cookie with `secret_key` (a random one per process when empty)."""
    app.secret_key = secret_key or secrets.token_hex(32)
    app.config.update(
        SESSION_COOKIE_NAME="trainsvc_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )


def sign_in(api_key: str) -> str | None:
    """Start a dashboard session for the key's tenant; None if the key is not valid."""
    api_key = api_key.strip()
    tenant = tenant_for_key(db_session(), api_key) if api_key else None
    if tenant is None:
        return None
    session.clear()
    session.permanent = True
    session["tenant"] = tenant
    session["key"] = hash_key(api_key)
    session["csrf"] = secrets.token_urlsafe(32)
    return tenant


def sign_out() -> None:
    session.clear()


def signed_in_tenant() -> str | None:
    """The session's tenant, if its key is still registered to it."""
    tenant, digest = session.get("tenant"), session.get("key")
    if not isinstance(tenant, str) or not isinstance(digest, str):
        return None
    return tenant if tenant_for_digest(digest, db_session) == tenant else None


def csrf_token() -> str:
    """This session's CSRF token (made on first use, before sign-in too)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """403 unless the form field or X-CSRF-Token header carries this session's token."""
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise ApiError(403, "the form has expired or did not come from this site; reload the page")
