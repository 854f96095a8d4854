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
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import redis

from service.redis_pool import redis_client

log = logging.getLogger(__name__)

# A slot whose process stopped renewing it is free again after this long.
LEASE_SECONDS = 60.0
# What a refused client is told to wait before it tries again.
RETRY_AFTER_SECONDS = 5


class StreamCap(Protocol):
    def acquire(self, tenants: Sequence[str]) -> list[str | None]:
        """Take a slot for each tenant named (maybe more than once): tokens, None where full."""

    def release(self, held: Iterable[tuple[str, str]]) -> None:
        """Give these (tenant, token) slots back (a second release does nothing)."""

    def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Extend the lease of these (tenant, token) slots, the streams still open here."""


class NoStreamCap:
    """Any number of streams (EVENTS_MAX_PER_TENANT=0)."""

    def acquire(self, tenants: Sequence[str]) -> list[str | None]:
        """Every stream is allowed."""
        return ["" for _ in tenants]

    def release(self, held: Iterable[tuple[str, str]]) -> None:
        """Nothing to give back."""

    def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Nothing to renew."""


class MemoryStreamCap:
    """Counts in this process only (the embedded broker: one machine, no Redis)."""

    def __init__(self, limit: int, lease: float = LEASE_SECONDS) -> None:
        self.limit, self.lease = limit, lease
        self._slots: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, tenants: Sequence[str]) -> list[str | None]:
        """A token for each while its tenant has fewer than `limit` unexpired slots here."""
        now = time.monotonic()
        tokens: list[str | None] = []
        with self._lock:
            for tenant in set(tenants):
                slots = self._slots.setdefault(tenant, {})
                for expired in [t for t, until in slots.items() if until <= now]:
                    del slots[expired]
            for tenant in tenants:
                slots = self._slots[tenant]
                token = uuid.uuid4().hex if len(slots) < self.limit else None
                if token is not None:
                    slots[token] = now + self.lease
                tokens.append(token)
        return tokens

    def release(self, held: Iterable[tuple[str, str]]) -> None:
        """Forget the slots."""
        with self._lock:
            for tenant, token in held:
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

    def __init__(
        self, url: str, limit: int, namespace: str = "training", lease: float = LEASE_SECONDS
    ) -> None:
        self.limit, self.lease, self.namespace = limit, lease, namespace
        self.client = redis_client(url)

    def key(self, tenant: str) -> str:
        """The sorted set of the tenant's open streams (per deployment: its queue's name)."""
        return f"trainsvc:streams:{self.namespace}:{tenant}"

    def acquire(self, tenants: Sequence[str]) -> list[str | None]:
        """One transaction: drop expired members, add one each, count after each addition.

        A member whose count is over the cap is taken back out: concurrent processes may refuse
        a stream too many, never admit one.
        """
        if not tenants:
            return []
        now = time.time()
        tokens = [uuid.uuid4().hex for _ in tenants]
        keys = sorted({self.key(tenant) for tenant in tenants})
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.zremrangebyscore(key, "-inf", now)
        for tenant, token in zip(tenants, tokens, strict=True):
            pipe.zadd(self.key(tenant), {token: now + self.lease})
            pipe.zcard(self.key(tenant))
        for key in keys:
            pipe.expire(key, int(2 * self.lease))
        try:
            counts = pipe.execute()[len(keys) + 1 : len(keys) + 2 * len(tenants) : 2]
        except redis.RedisError as exc:
            # Fail open, as the rate limit does: an unreachable Redis must not refuse every stream.
            log.warning("stream cap not checked: %s", exc)
            return ["" for _ in tenants]
        admitted = [t if n <= self.limit else None for t, n in zip(tokens, counts, strict=True)]
        self.release(
            (tenant, t) for tenant, t, a in zip(tenants, tokens, admitted, strict=True) if a is None
        )
        return admitted

    def release(self, held: Iterable[tuple[str, str]]) -> None:
        """Remove the members, in one round trip (their leases would run out anyway)."""
        self._each(held, lambda pipe, key, token: pipe.zrem(key, token), "released")

    def renew(self, held: Iterable[tuple[str, str]]) -> None:
        """Push the members' leases one lease ahead, in one round trip."""
        until = time.time() + self.lease
        self._each(held, lambda pipe, key, token: pipe.zadd(key, {token: until}), "renewed")

    def _each(self, held: Iterable[tuple[str, str]], command: Any, done: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for tenant, token in held:
            if token:  # "" is a slot admitted while Redis was unreachable
                command(pipe, self.key(tenant), token)
        if not len(pipe):
            return
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("stream slots not %s (they expire within %gs): %s", done, self.lease, exc)


def make_stream_cap(broker_url: str, limit: int, namespace: str) -> StreamCap:
    """Redis when it is the broker, else this process's own count; no cap when `limit` is 0.

    `namespace` (the queue's name) keeps deployments that share one Redis apart.
    """
    if limit <= 0:
        return NoStreamCap()
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisStreamCap(broker_url, limit, namespace)
    return MemoryStreamCap(limit)
