"""Settings come from the environment, and unsafe combinations are refused at start-up."""

from __future__ import annotations

import pytest

from core.settings import Settings, parse_api_keys


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env({"API_KEYS": "acme:k1, beta:k2", "PORT": "9", "MAX_ATTEMPTS": "5"})
    assert settings.api_keys == {"k1": "acme", "k2": "beta"}
    assert settings.max_attempts == 5
    assert settings.database_url.startswith("sqlite:///") and settings.redis_url.startswith("redis")


def test_visibility_timeout_must_outlast_the_hard_limit() -> None:
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT"):
        Settings.from_env(
            {"JOB_TIME_LIMIT": "100", "JOB_SOFT_TIME_LIMIT": "50", "VISIBILITY_TIMEOUT": "100"}
        )
    derived = Settings.from_env({"JOB_TIME_LIMIT": "100", "JOB_SOFT_TIME_LIMIT": "50"})
    assert derived.visibility_timeout > derived.job_time_limit


def test_soft_limit_below_hard_and_sane_heartbeats() -> None:
    with pytest.raises(ValueError, match="JOB_SOFT_TIME_LIMIT"):
        Settings.from_env({"JOB_TIME_LIMIT": "100", "JOB_SOFT_TIME_LIMIT": "100"})
    with pytest.raises(ValueError, match="STALE_AFTER_SECONDS"):
        Settings.from_env({"HEARTBEAT_SECONDS": "10", "STALE_AFTER_SECONDS": "15"})
    with pytest.raises(ValueError, match="MAX_ATTEMPTS"):
        Settings.from_env({"MAX_ATTEMPTS": "many"})


def test_bad_api_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="tenant:key"):
        parse_api_keys("no-colon-here")
