"""Per-key request limits: a fixed one-minute window, counted in Redis when there is one.

Used for requests per API key and for failed authentications per client address."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Protocol

import redis

from service.redis_pool import redis_client

log = logging.getLogger(__name__)
WINDOW = 60.0


class RateLimiter(Protocol):
    def hit(self, key: str) -> float | None:
        """Count one request; None if allowed, else the seconds to wait."""

    def over(self, key: str) -> float | None:
        """None if the key is within its limit this minute, else the seconds to wait (no count)."""


def _retry_after(now: float) -> float:
    return max(1.0, math.ceil(WINDOW - now % WINDOW))


class _Limiter:
    """Requests per key per minute: `hit` counts one, `over` only looks; either answers the
    seconds to wait when the key is over its limit (None: go ahead)."""

    def hit(self, key: str) -> float | None:
        return self._count(key, 1)

    def over(self, key: str) -> float | None:
        return self._count(key, 0)

    def _count(self, key: str, add: int) -> float | None:
        raise NotImplementedError


class MemoryRateLimiter(_Limiter):
    """Counts in this process only (the embedded setup: one machine, no Redis)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _count(self, key: str, add: int) -> float | None:
        now = time.time()
        window = int(now // WINDOW)
        with self._lock:
            start, count = self._counts.get(key, (window, 0))
            count = (count if start == window else 0) + add
            if add:
                self._counts[key] = (window, count)
        return None if count <= self.per_minute else _retry_after(now)


class RedisRateLimiter(_Limiter):
    """Counts in Redis, so every API process shares one limit per key."""

    def __init__(self, url: str, per_minute: int) -> None:
        self.url, self.per_minute = url, per_minute
        self.client = redis_client(url, timeout=0.5)

    @staticmethod
    def _name(key: str, now: float) -> str:
        return f"trainsvc:ratelimit:{key}:{int(now // WINDOW)}"

    def over_and_hit(
        self, failures: RedisRateLimiter, address: str, key: str
    ) -> tuple[float | None, float | None]:
        """`failures.over(address)` and `self.hit(key)` in one round trip to Redis."""
        now = time.time()
        name = self._name(key, now)
        try:
            pipe = self.client.pipeline()
            pipe.get(self._name(address, now))
            pipe.incr(name, 1)
            pipe.expire(name, int(WINDOW) + 5)
            failed, count, _ = pipe.execute()
        except redis.RedisError as exc:
            log.warning("rate limit not checked: %s", exc)
            return None, None
        if int(failed or 0) > failures.per_minute:
            return _retry_after(now), None
        return None, None if int(count) <= self.per_minute else _retry_after(now)

    def _count(self, key: str, add: int) -> float | None:
        now = time.time()
        name = self._name(key, now)
        try:
            if add:
                pipe = self.client.pipeline()
                pipe.incr(name, add)
                pipe.expire(name, int(WINDOW) + 5)
                count = int(pipe.execute()[0])
            else:
                count = int(self.client.get(name) or 0)
        except redis.RedisError as exc:
            # Fail open: an unreachable Redis must not turn every request into an error.
            log.warning("rate limit not checked: %s", exc)
            return None
        return None if count <= self.per_minute else _retry_after(now)


class NoRateLimit:
    def hit(self, key: str) -> float | None:
        return None

    def over(self, key: str) -> float | None:
        return None


def over_and_hit(
    failures: RateLimiter, address: str, limiter: RateLimiter, key: str
) -> tuple[float | None, float | None]:
    """Whether `address` is over its failed authentications (the seconds to wait, or None) and,
    if it is not, `limiter.hit(key)`: in one Redis round trip when both count in the same Redis.

    A request from an address over its failures is refused before its key's request is counted
    (the one-round-trip form counts it too: the key's count is one higher, no more).
    """
    if (
        isinstance(failures, RedisRateLimiter)
        and isinstance(limiter, RedisRateLimiter)
        and failures.url == limiter.url
    ):
        return limiter.over_and_hit(failures, address, key)
    wait = failures.over(address)
    if wait is not None:
        return wait, None
    return None, limiter.hit(key)


def make_rate_limiter(broker_url: str, per_minute: int) -> RateLimiter:
    if per_minute <= 0:
        return NoRateLimit()
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(broker_url, per_minute)
    return MemoryRateLimiter(per_minute)
