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
        self.per_minute = per_minute
        self.client = redis_client(url, timeout=0.5)

    def _count(self, key: str, add: int) -> float | None:
        now = time.time()
        name = f"trainsvc:ratelimit:{key}:{int(now // WINDOW)}"
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


def make_rate_limiter(broker_url: str, per_minute: int) -> RateLimiter:
    if per_minute <= 0:
        return NoRateLimit()
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(broker_url, per_minute)
    return MemoryRateLimiter(per_minute)
