"""Per-key request limits: a fixed one-minute window, counted in Redis when there is one.

Used for requests per API key and for failed authentications per client address."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
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

    def over(self, key: str) -> float | None:
        # Only a look (one dict read of a tuple the counting side replaces whole): no lock.
        now = time.time()
        start, count = self._counts.get(key, (0, 0))
        if count <= self.per_minute or start != int(now // WINDOW):
            return None
        return _retry_after(now)

    def _count(self, key: str, add: int) -> float | None:
        now = time.time()
        window = int(now // WINDOW)
        with self._lock:
            start, count = self._counts.get(key, (window, 0))
            count = (count if start == window else 0) + add
            if add:
                self._counts[key] = (window, count)
        return None if count <= self.per_minute else _retry_after(now)


_MAX_ENTRIES = 10_000  # keys a process remembers leases or clean addresses for


@dataclass
class _Lease:
    """This process's tokens for one key in one window."""

    window: int
    tokens: int = 0  # left to serve locally
    seen: int = 0  # the window's count in Redis, as last read
    spent: bool = False  # the count reached the limit: refuse once the tokens are gone


class RedisRateLimiter(_Limiter):
    """Counts in Redis, so every API process shares one limit per key.

    With `lease` above 1 (the per-key request limit), a process does not count each request in
    Redis: it takes a lease of tokens for the current window with one INCRBY and serves requests
    from it locally, taking another when it runs out. A lease is cut to what is left of the limit,
    so a key is never allowed past its limit in a window across all processes; the cost is the
    other way: tokens a process leased and has not used yet are not there for the others, so a
    key can be refused short of its limit by at most one lease per other process. Leases adapt:
    at most `lease` tokens and 1/64 of what is left of the limit, so near the limit every
    request is counted in Redis one by one. Once a window's count reaches the limit, this process
    refuses the key locally until the window ends (a count never goes down within its window).

    With `clean_seconds` above 0 (the failed-authentication limiter), an address that had no
    failure this window, as read from Redis, is taken as clean for that long without reading
    again: `over_and_hit` then skips Redis for it. A failure counted by this process forgets it
    at once; one counted by another process is seen here within `clean_seconds`. `over` (the
    check before an unknown key is looked up) always reads Redis.
    """

    def __init__(
        self, url: str, per_minute: int, lease: int = 1, clean_seconds: float = 0.0
    ) -> None:
        self.url, self.per_minute = url, per_minute
        self.lease, self.clean_seconds = max(1, lease), clean_seconds
        self.client = redis_client(url, timeout=0.5)
        self._lock = threading.Lock()
        self._leases: dict[str, _Lease] = {}
        self._clean: dict[str, float] = {}  # key -> monotonic time its clean reading expires

    @staticmethod
    def _name(key: str, now: float) -> str:
        return f"trainsvc:ratelimit:{key}:{int(now // WINDOW)}"

    # --- Failures: which addresses this process knows to be clean --------------------------

    def known_clean(self, key: str) -> bool:
        return self._clean.get(key, 0.0) > time.monotonic()

    def _read_clean(self, key: str, count: int) -> None:
        """Remember `key` as clean for `clean_seconds` when Redis said it had no failure."""
        if count == 0 and self.clean_seconds > 0:
            with self._lock:
                if len(self._clean) >= _MAX_ENTRIES:
                    self._clean.clear()
                self._clean[key] = time.monotonic() + self.clean_seconds

    # --- Requests: leases of tokens per window ----------------------------------------------

    def _take_local(self, key: str, window: int) -> bool | None:
        """True: one token from this process's lease; False: the key is spent for this window
        (refuse); None: no token here, ask Redis."""
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.window != window:
                return None
            if lease.tokens > 0:
                lease.tokens -= 1
                return True
            return False if lease.spent else None

    def _lease_size(self, key: str, window: int) -> int:
        lease = self._leases.get(key)
        left = self.per_minute - (lease.seen if lease is not None and lease.window == window else 0)
        return max(1, min(self.lease, left // 64))

    def _granted(self, key: str, window: int, size: int, total: int) -> bool:
        """Record a lease of `size` tokens whose INCRBY answered `total`; whether this request
        got one of them."""
        granted = max(0, min(size, self.per_minute - (total - size)))
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.window != window:
                if len(self._leases) >= _MAX_ENTRIES:
                    self._leases = {k: v for k, v in self._leases.items() if v.window == window}
                lease = self._leases[key] = _Lease(window)
            lease.tokens += max(0, granted - 1)
            lease.seen = max(lease.seen, total)
            lease.spent = lease.spent or total >= self.per_minute
        return granted > 0

    def hit(self, key: str) -> float | None:
        if self.lease == 1:
            return self._count(key, 1)
        now = time.time()
        window = int(now // WINDOW)
        local = self._take_local(key, window)
        if local is not None:
            return None if local else _retry_after(now)
        size = self._lease_size(key, window)
        name = self._name(key, now)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incrby(name, size)
            pipe.expire(name, int(WINDOW) + 5)
            total = int(pipe.execute()[0])
        except redis.RedisError as exc:
            log.warning("rate limit not checked: %s", exc)
            return None
        return None if self._granted(key, window, size, total) else _retry_after(now)

    def over_and_hit(
        self, failures: RedisRateLimiter, address: str, key: str
    ) -> tuple[float | None, float | None]:
        """`failures.over(address)` and `self.hit(key)` in at most one round trip to Redis, and
        none when this process knows the address to be clean and holds a token for the key."""
        now = time.time()
        window = int(now // WINDOW)
        clean = failures.known_clean(address)
        local = self._take_local(key, window) if clean else None
        if local is not None:
            return None, None if local else _retry_after(now)
        if not clean:
            local = self._take_local(key, window)
        size = self._lease_size(key, window)
        name = self._name(key, now)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(failures._name(address, now))
            if local is None:
                pipe.incrby(name, size)
                pipe.expire(name, int(WINDOW) + 5)
            answers = pipe.execute()
        except redis.RedisError as exc:
            log.warning("rate limit not checked: %s", exc)
            return None, None
        failed = int(answers[0] or 0)
        failures._read_clean(address, failed)
        if failed > failures.per_minute:
            return _retry_after(now), None
        if local is None:
            local = self._granted(key, window, size, int(answers[1]))
        return None, None if local else _retry_after(now)

    def _count(self, key: str, add: int) -> float | None:
        now = time.time()
        name = self._name(key, now)
        if add and self._clean:
            with self._lock:
                self._clean.pop(key, None)
        try:
            if add:
                pipe = self.client.pipeline(transaction=False)
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
    if it is not, `limiter.hit(key)`: in at most one Redis round trip when both count in the same
    Redis, and usually none (a clean address read recently, a token left in this process's lease).

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


def make_rate_limiter(
    broker_url: str, per_minute: int, lease: int = 1, clean_seconds: float = 0.0
) -> RateLimiter:
    """`lease` and `clean_seconds`: see RedisRateLimiter (they matter only when counting in
    Redis; in process memory every count is already local)."""
    if per_minute <= 0:
        return NoRateLimit()
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(broker_url, per_minute, lease, clean_seconds)
    return MemoryRateLimiter(per_minute)
