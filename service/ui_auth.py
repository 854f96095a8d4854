"""The dashboard's sign-in: an API key checked once, then a server-side session named by the
signed session cookie.

The cookie holds a random session id (and the CSRF token), never the key or the tenant. The
`ui_sessions` row it names holds the tenant and the SHA-256 of the key: signing out deletes the
row, so a replayed old cookie answers as signed out; revoking the key ends the session too; and
the row expires after SESSION_HOURS. Every state-changing dashboard request carries a
per-session CSRF token. Failed sign-ins count toward AUTH_FAILURES_PER_MINUTE per address.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from flask import Flask, Request, Response, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from sqlalchemy import delete, select

from core.models import UiSession, utcnow
from service.api.common import session as db_session
from service.auth import check_failures, count_failure, hash_key, tenant_for_digest, tenant_for_key
from service.errors import ApiError

SESSION_HOURS = 12
LIFETIME = timedelta(hours=SESSION_HOURS)


def configure(app: Flask, secret_key: str, *, secure: bool = False) -> None:
    """Sign the session cookie with `secret_key` (a random one per process when empty)."""
    app.secret_key = secret_key or secrets.token_hex(32)
    app.config.update(
        SESSION_COOKIE_NAME="trainsvc_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=LIFETIME,
    )
    app.session_interface = CookieSessions()


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signer built only when a cookie came: an API
    request (a bearer key, no cookie) starts an empty session for nothing."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if "HTTP_COOKIE" in request.environ and request.cookies.get(self.get_cookie_name(app)):
            return super().open_session(app, request)
        return self.session_class()

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Nothing to do for a session nobody touched (every API request): skip the cookie
        settings Flask would read only to return."""
        if session or session.modified or session.accessed:
            super().save_session(app, session, response)


def sign_in(api_key: str) -> str | None:
    """Start a dashboard session for the key's tenant; None if the key is not valid.

    429 (ApiError) once this address has failed to sign in too often this minute.
    """
    check_failures()
    api_key = api_key.strip()
    tenant = tenant_for_key(db_session(), api_key) if api_key else None
    if tenant is None:
        count_failure()
        return None
    sid, now = secrets.token_urlsafe(32), utcnow()
    rows = db_session()
    rows.execute(delete(UiSession).where(UiSession.expires_at <= now))
    rows.add(
        UiSession(
            id_hash=hash_key(sid),
            tenant_id=tenant,
            key_hash=hash_key(api_key),
            created_at=now,
            expires_at=now + LIFETIME,
        )
    )
    rows.commit()
    session.clear()  # a new CSRF token too: nothing from before sign-in carries over
    session.permanent = True
    session["sid"] = sid
    session["csrf"] = secrets.token_urlsafe(32)
    return tenant


def sign_out() -> None:
    """End the session on the server (its cookie, replayed, is signed out) and in the browser."""
    sid = session.get("sid")
    if isinstance(sid, str):
        rows = db_session()
        rows.execute(delete(UiSession).where(UiSession.id_hash == hash_key(sid)))
        rows.commit()
    session.clear()


def signed_in_tenant() -> str | None:
    """The session's tenant, if the session is live and its key still registered to it."""
    sid = session.get("sid")
    if not isinstance(sid, str):
        return None
    row = db_session().scalar(
        select(UiSession).where(UiSession.id_hash == hash_key(sid), UiSession.expires_at > utcnow())
    )
    if row is None:
        return None
    g.key_digest = row.key_hash  # the key signed in with: who made a change (registry history)
    return row.tenant_id if tenant_for_digest(row.key_hash, db_session) == row.tenant_id else None


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
