"""Settings come from the environment, and unsafe combinations are refused at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import ENV_VARS, Settings, parse_api_keys


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


def test_env_example_lists_every_setting_with_its_default() -> None:
    """.env.example names every variable Settings reads, each with the documented default."""
    lines = Path(__file__).resolve().parents[2].joinpath(".env.example").read_text().splitlines()
    documented = dict(
        line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert set(documented) == {*ENV_VARS, "API_KEYS", "VAR_DIR"}
    defaults = Settings()
    for name, (attr, _kind) in ENV_VARS.items():
        if name == "DATABASE_URL":
            continue  # empty: the SQLite file under VAR_DIR
        expected = getattr(defaults, attr)
        if isinstance(expected, bool):
            expected = str(expected).lower()
        assert documented[name] == str(expected), name
    assert Settings.from_env(documented) == Settings.from_env({})
