"""The shared (Redis) rate limiter: one count per key across every API process."""

from __future__ import annotations

import uuid

import pytest

from service.ratelimit import RedisRateLimiter
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
