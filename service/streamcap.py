"""How many event streams a tenant may hold open at once, counted across every API process.

Each open stream holds a slot: a member of a sorted set per tenant in Redis, scored by the time
its lease runs out. The process serving the stream renews its leases every `LEASE_SECONDS / 3`
and removes the member when the stream ends; a process that dies without doing so leaves members
that expire on their own, so a crash cannot use up a tenant's slots for longer than one lease.
With the embedded (filesystem) broker there is no Redis: each process counts its own streams.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Protocol

import redis

log = logging.getLogger(__name__)

# A slot whose process stopped renewing it is free again after this long.
LEASE_SECONDS = 60.0
# What a refused client is told to wait before it tries again.
RETRY_AFTER_SECONDS = 5


class StreamCap(Protocol):
    def acquire(self, tenant: str) -> str | None:
        """Take one of the tenant's slots: its token, or None when they are all in use."""

    def release(self, tenant: str, token: str) -> None:
        """Give the slot back (a second release does nothing)."""

    def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Extend the lease of these (tenant, token) slots, the streams still open here."""


class NoStreamCap:
    """Any number of streams (EVENTS_MAX_PER_TENANT=0)."""

    def acquire(self, tenant: str) -> str | None:
        """Every stream is allowed."""
        return ""

    def release(self, tenant: str, token: str) -> None:
        """Nothing to give back."""

    def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Nothing to renew."""


class MemoryStreamCap:
    """Counts in this process only (the embedded broker: one machine, no Redis)."""

    def __init__(self, limit: int, lease: float = LEASE_SECONDS) -> None:
        self.limit, self.lease = limit, lease
        self._slots: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant: str) -> str | None:
        """A token while the tenant has fewer than `limit` unexpired slots here."""
        now = time.monotonic()
        with self._lock:
            slots = self._slots.setdefault(tenant, {})
            for token in [t for t, until in slots.items() if until <= now]:
                del slots[token]
            if len(slots) >= self.limit:
                return None
            token = uuid.uuid4().hex
            slots[token] = now + self.lease
            return token

    def release(self, tenant: str, token: str) -> None:
        """Forget the slot."""
        with self._lock:
            self._slots.get(tenant, {}).pop(token, None)

    def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Push the leases of the held slots one lease ahead."""
        until = time.monotonic() + self.lease
        with self._lock:
            for tenant, token in held:
                if token in self._slots.get(tenant, {}):
                    self._slots[tenant][token] = until


class RedisStreamCap:
    """Counts in Redis, so every API process shares one cap per tenant."""

    def __init__(self, url: str, limit: int, lease: float = LEASE_SECONDS) -> None:
        self.limit, self.lease = limit, lease
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    @staticmethod
    def key(tenant: str) -> str:
        """The sorted set of the tenant's open streams."""
        return f"trainsvc:streams:{tenant}"

    def acquire(self, tenant: str) -> str | None:
        """Add a member, then count; over the cap, take it back out (never admits too many)."""
        token = uuid.uuid4().hex
        key, now = self.key(tenant), time.time()
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {token: now + self.lease})
            pipe.zcard(key)
            pipe.expire(key, int(2 * self.lease))
            count = int(pipe.execute()[2])
            if count <= self.limit:
                return token
            self.client.zrem(key, token)
            return None
        except redis.RedisError as exc:
            # Fail open, as the rate limit does: an unreachable Redis must not refuse every stream.
            log.warning("stream cap not checked: %s", exc)
            return ""

    def release(self, tenant: str, token: str) -> None:
        """Remove the member (its lease would run out anyway)."""
        if not token:
            return
        try:
            self.client.zrem(self.key(tenant), token)
        except redis.RedisError as exc:
            log.warning("stream slot not released (it expires within %gs): %s", self.lease, exc)

    def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """One round trip for every slot this process holds."""
        until = time.time() + self.lease
        pipe = self.client.pipeline(transaction=False)
        tenants = set()
        for tenant, token in held:
            if token:
                pipe.zadd(self.key(tenant), {token: until})
                tenants.add(tenant)
        for tenant in tenants:
            pipe.expire(self.key(tenant), int(2 * self.lease))
        if not tenants:
            return
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("stream slots not renewed: %s", exc)


def make_stream_cap(broker_url: str, limit: int) -> StreamCap:
    """Redis when it is the broker, else this process's own count; no cap when `limit` is 0."""
    if limit <= 0:
        return NoStreamCap()
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisStreamCap(broker_url, limit)
    return MemoryStreamCap(limit)
