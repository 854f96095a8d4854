"""The shared (Redis) rate limiter: one count per key across every API process."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any

import pytest

from service.ratelimit import WINDOW, RedisRateLimiter, over_and_hit
from tests.support import redis_url

pytestmark = pytest.mark.integration


def test_two_limiters_on_one_redis_share_the_count() -> None:
    url = redis_url()
    if url is None:
        pytest.skip("no Redis answering")
    key = f"test-{uuid.uuid4().hex}"
    first, second = RedisRateLimiter(url, per_minute=4), RedisRateLimiter(url, per_minute=4)
    answers = [limiter.hit(key) for limiter in (first, second, first, second, first)]
    assert answers[:4] == [None] * 4
    assert answers[4] is not None and 1 <= answers[4] <= 60


def test_an_unreachable_redis_fails_open() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", per_minute=1)
    assert limiter.hit("k") is None and limiter.hit("k") is None


def _redis() -> str:
    """Redis's URL, once at least 10 s of this minute are left (counts start again each minute)."""
    url = redis_url()
    if url is None:
        pytest.skip("no Redis answering")
    left = WINDOW - time.time() % WINDOW
    if left < 10:
        time.sleep(left + 0.05)
    return url


def _serve(args: tuple[str, str, int, int, int]) -> int:
    """One API process's share: `count` requests for `key`; how many were allowed."""
    url, key, per_minute, lease, count = args
    limiter = RedisRateLimiter(url, per_minute, lease=lease)
    return sum(limiter.hit(key) is None for _ in range(count))


def test_leases_in_two_processes_never_pass_the_limit() -> None:
    """Two processes taking leases of one key's tokens: together they are allowed at most the
    limit, and refused short of it by at most the other's one unused lease."""
    url, key = _redis(), f"test-{uuid.uuid4().hex}"
    per_minute, lease = 1000, 32
    with multiprocessing.get_context("fork").Pool(2) as pool:
        allowed = pool.map(_serve, [(url, key, per_minute, lease, 800)] * 2)
    assert per_minute - lease <= sum(allowed) <= per_minute, allowed


def test_interleaved_limiters_share_the_limit_within_one_lease() -> None:
    url, key = _redis(), f"test-{uuid.uuid4().hex}"
    limiters = [RedisRateLimiter(url, 300, lease=32) for _ in range(3)]
    answers = [limiters[i % 3].hit(key) for i in range(400)]
    allowed = sum(a is None for a in answers)
    assert 300 - 2 * 32 <= allowed <= 300
    refused = [a for a in answers if a is not None]
    assert refused and all(1 <= a <= 60 for a in refused)
    # Near the limit every request is counted one by one: here none is lost at all.
    assert allowed == 300 or answers[-1] is not None


def test_a_spent_key_is_refused_without_asking_redis_again() -> None:
    url, key = _redis(), f"test-{uuid.uuid4().hex}"
    limiter = RedisRateLimiter(url, 3, lease=32)
    assert [limiter.hit(key) is None for _ in range(4)] == [True, True, True, False]
    limiter.client = None  # type: ignore[assignment]  # any use of Redis now fails loudly
    assert limiter.hit(key) is not None


def test_a_clean_address_and_a_leased_token_make_no_round_trip() -> None:
    url, key, address = _redis(), f"test-{uuid.uuid4().hex}", f"addr-{uuid.uuid4().hex}"
    failures = RedisRateLimiter(url, 3, clean_seconds=30)
    requests = RedisRateLimiter(url, 10_000, lease=32)
    assert over_and_hit(failures, address, requests, key) == (None, None)  # reads, leases
    calls: list[int] = []
    real = requests.client.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    requests.client.pipeline = counted  # type: ignore[method-assign]
    for _ in range(20):
        assert over_and_hit(failures, address, requests, key) == (None, None)
    assert calls == []
    # A failure counted by this process forgets the clean reading at once.
    for _ in range(4):
        failures.hit(address)
    blocked, _ = over_and_hit(failures, address, requests, key)
    assert blocked is not None and 1 <= blocked <= 60 and calls == [1]


def test_an_address_throttled_elsewhere_is_refused_within_clean_seconds() -> None:
    url, key, address = _redis(), f"test-{uuid.uuid4().hex}", f"addr-{uuid.uuid4().hex}"
    failures = RedisRateLimiter(url, 3, clean_seconds=0.2)
    requests = RedisRateLimiter(url, 10_000, lease=32)
    assert over_and_hit(failures, address, requests, key) == (None, None)
    elsewhere = RedisRateLimiter(url, 3)  # another API process's failure limiter
    assert [elsewhere.hit(address) for _ in range(4)][-1] is not None
    time.sleep(0.25)
    blocked, wait = over_and_hit(failures, address, requests, key)
    assert blocked is not None and wait is None
    assert failures.over(address) is not None  # an unknown key's check reads Redis at once
