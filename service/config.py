"""Typed settings, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_VAR_DIR = Path("var")


def _default_database_url(var_dir: Path) -> str:
    return f"sqlite:///{(var_dir / 'service.db').resolve()}"


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse `tenant:key,tenant:key` into {key: tenant}."""
    keys: dict[str, str] = {}
    for chunk in raw.split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        tenant, sep, key = chunk.partition(":")
        if not sep or not tenant.strip() or not key.strip():
            raise ValueError(f"API_KEYS entry {chunk!r} is not of the form tenant:key")
        keys[key.strip()] = tenant.strip()
    return keys


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the service; see `.env.example` for the variables."""

    database_url: str = field(default_factory=lambda: _default_database_url(DEFAULT_VAR_DIR))
    redis_url: str = "redis://localhost:6379/0"
    # The broker actually used; `make run` may point it at a local or embedded broker.
    broker_url: str = ""
    queue_name: str = "training"
    api_keys: dict[str, str] = field(default_factory=dict)
    var_dir: Path = DEFAULT_VAR_DIR
    max_content_length: int = 16 * 1024 * 1024
    job_soft_time_limit: int = 3600
    job_time_limit: int = 3660
    # Redis re-delivers an unacknowledged message after this many seconds; it must outlast the
    # hard time limit or a long job would be handed to a second worker while the first still runs.
    visibility_timeout: int = 3960
    metrics_flush_seconds: float = 0.5
    # Pool processes are replaced after this many jobs, or once they hold this much memory
    # (KiB), so TensorFlow's caches cannot make a worker grow without bound.
    worker_max_tasks_per_child: int = 20
    worker_max_memory_per_child: int = 2_000_000
    model_cache_size: int = 64
    max_predict_rows: int = 10_000

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, falling back to the documented defaults."""
        env = os.environ if env is None else env
        var_dir = Path(env.get("VAR_DIR", str(DEFAULT_VAR_DIR)))
        base = cls(var_dir=var_dir, database_url=_default_database_url(var_dir))
        ints = {
            "MAX_CONTENT_LENGTH": "max_content_length",
            "JOB_SOFT_TIME_LIMIT": "job_soft_time_limit",
            "JOB_TIME_LIMIT": "job_time_limit",
            "VISIBILITY_TIMEOUT": "visibility_timeout",
            "MODEL_CACHE_SIZE": "model_cache_size",
            "MAX_PREDICT_ROWS": "max_predict_rows",
            "WORKER_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
            "WORKER_MAX_MEMORY_PER_CHILD": "worker_max_memory_per_child",
        }
        changes: dict[str, Any] = {}
        for name, attr in ints.items():
            if env.get(name):
                changes[attr] = int(env[name])
        if env.get("METRICS_FLUSH_SECONDS"):
            changes["metrics_flush_seconds"] = float(env["METRICS_FLUSH_SECONDS"])
        strings = {
            "DATABASE_URL": "database_url",
            "REDIS_URL": "redis_url",
            "BROKER_URL": "broker_url",
            "QUEUE_NAME": "queue_name",
        }
        for name, attr in strings.items():
            if env.get(name):
                changes[attr] = env[name]
        if env.get("API_KEYS"):
            changes["api_keys"] = parse_api_keys(env["API_KEYS"])
        if "VISIBILITY_TIMEOUT" not in env and "JOB_TIME_LIMIT" in changes:
            changes["visibility_timeout"] = changes["job_time_limit"] + 300
        settings = replace(base, **changes)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that would break the worker's delivery guarantees."""
        if self.job_soft_time_limit >= self.job_time_limit:
            raise ValueError("JOB_SOFT_TIME_LIMIT must be below JOB_TIME_LIMIT")
        if self.visibility_timeout <= self.job_time_limit:
            raise ValueError(
                "VISIBILITY_TIMEOUT must be longer than JOB_TIME_LIMIT, or Redis would hand a "
                "running job to a second worker"
            )
