"""API keys: stored as SHA-256 hashes, looked up by hash, compared in constant time; failed
authentications counted per client address, and refused with 429 past AUTH_FAILURES_PER_MINUTE."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ApiKey, Tenant
from service.errors import ApiError
from service.ratelimit import RateLimiter, over_and_hit


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "tsk_" + secrets.token_urlsafe(24)


def ensure_api_key(session: Session, tenant_id: str, key: str) -> None:
    """Create the tenant and register `key` for it, if not already there."""
    if session.get(Tenant, tenant_id) is None:
        session.add(Tenant(id=tenant_id))
        session.flush()
    digest = hash_key(key)
    existing = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if existing is None:
        session.add(ApiKey(tenant_id=tenant_id, key_hash=digest, prefix=key[:8]))
    elif existing.tenant_id != tenant_id:
        raise ValueError(f"this key already belongs to tenant {existing.tenant_id!r}")


class KeyCache:
    """Recently seen key hashes and their tenant, so most requests skip the database.

    A revoked key keeps working for at most `ttl` seconds in each API process.
    """

    def __init__(self, ttl: float = 30.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._items: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> str | None:
        item = self._items.get(digest)
        if item is None or item[1] < time.monotonic():
            return None
        return item[0]

    def put(self, digest: str, tenant: str) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[digest] = (tenant, time.monotonic() + self.ttl)


def tenant_for_key(session: Session, key: str) -> str | None:
    """The tenant a key is registered to, from the database (None: not registered)."""
    return _registered_tenant(session, hash_key(key))


def _registered_tenant(session: Session, digest: str) -> str | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row.tenant_id


def tenant_for_digest(digest: str, session: Callable[[], Session]) -> str | None:
    """The tenant of a key's hash, from this process's cache or else the database (None: none).

    `session` is called only when the hash is not in the cache.
    """
    cache: KeyCache = current_app.extensions["trainsvc.keys"]
    tenant = cache.get(digest)
    if tenant is None:
        tenant = _registered_tenant(session(), digest)
        if tenant is not None:
            cache.put(digest, tenant)
    return tenant


def _failures(
    extensions: dict[str, Any] | None = None, environ: dict[str, Any] | None = None
) -> tuple[RateLimiter, str]:
    """The failed-authentication limiter and this request's key in it: the client address.

    The address is the connection's, or X-Forwarded-For's when TRUSTED_PROXIES says proxies set
    it (werkzeug's ProxyFix rewrites REMOTE_ADDR). The key names the queue too: services
    sharing one Redis (each with its own QUEUE_NAME) keep their own counts. `extensions` and
    `environ` are the app's and the request's, when the caller has them at hand.
    """
    if extensions is None:
        extensions = current_app.extensions
    if environ is None:
        environ = request.environ
    limiter: RateLimiter = extensions["trainsvc.auth_failures"]
    return limiter, extensions["trainsvc.auth_failures.prefix"] + (
        environ.get("REMOTE_ADDR") or "unknown"
    )


def _too_many(wait: float) -> ApiError:
    return ApiError(
        429,
        "too many failed authentications from this address; try again in a minute",
        headers={"Retry-After": str(int(wait))},
    )


def check_failures() -> None:
    """429 if this client address has failed to authenticate too often this minute.

    Checked before any key, so a right guess answers as a wrong one does once the limit is hit.
    """
    limiter, address = _failures()
    wait = limiter.over(address)
    if wait is not None:
        raise _too_many(wait)


def count_failure() -> None:
    """Count a failed authentication from this client address; 429 once past the limit."""
    limiter, address = _failures()
    wait = limiter.hit(address)
    if wait is not None:
        raise _too_many(wait)


# The SHA-256 digest of each Authorization header a known key came in (a pure function, kept
# so most requests skip hashing, a few microseconds of each prediction). Only headers whose key
# was found go in, so a client cannot fill it; whether the key still counts is KeyCache's word.
_digests: dict[str, str] = {}
_MAX_DIGESTS = 10_000


def authenticate(session: Callable[[], Session]) -> str:
    """The tenant of the request's bearer key; 401 without a valid one.

    `session` is called only when the key is not in the cache.
    """
    environ = request.environ
    extensions = current_app.extensions
    header = environ.get("HTTP_AUTHORIZATION", "")  # headers["Authorization"], read once
    digest = _digests.get(header)
    if digest is None:
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "missing API key: send Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(key)
    limiter = extensions["trainsvc.ratelimit"]
    known = extensions["trainsvc.keys"].get(digest)
    if known is None:
        check_failures()
        tenant = tenant_for_digest(digest, session)
        if tenant is None:
            count_failure()
            raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if len(_digests) >= _MAX_DIGESTS:
            _digests.clear()
        _digests[header] = digest
        wait = limiter.hit(digest[:16])
    else:
        # A key this process knows: the address's failures checked (first, as for any key) and
        # the key's request counted in one round trip to Redis.
        failures, address = _failures(extensions, environ)
        blocked, wait = over_and_hit(failures, address, limiter, digest[:16])
        if blocked is not None:
            raise _too_many(blocked)
        tenant = known
    if wait is not None:
        raise ApiError(
            429,
            "too many requests for this API key; slow down",
            headers={"Retry-After": str(int(wait))},
        )
    current = g._get_current_object()
    current.tenant_id = tenant
    current.key_digest = digest  # who made a change, for the registry's history
    return tenant
