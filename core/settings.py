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


def flag(raw: str) -> bool:
    """A yes/no setting: 1, true, yes, on, or 0, false, no, off."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


ENV_VARS: dict[str, tuple[str, Any]] = {
    "DATABASE_URL": ("database_url", str),
    "DATABASE_TIMEOUT_SECONDS": ("database_timeout_seconds", float),
    "REDIS_URL": ("redis_url", str),
    "BROKER_URL": ("broker_url", str),
    "QUEUE_NAME": ("queue_name", str),
    "MAX_CONTENT_LENGTH": ("max_content_length", int),
    "JOB_SOFT_TIME_LIMIT": ("job_soft_time_limit", int),
    "JOB_TIME_LIMIT": ("job_time_limit", int),
    "VISIBILITY_TIMEOUT": ("visibility_timeout", int),
    "METRICS_FLUSH_SECONDS": ("metrics_flush_seconds", float),
    "WORKER_MAX_TASKS_PER_CHILD": ("worker_max_tasks_per_child", int),
    "WORKER_MAX_MEMORY_PER_CHILD": ("worker_max_memory_per_child", int),
    "WORKER_MAX_KERAS_JOBS_PER_CHILD": ("worker_max_keras_jobs_per_child", int),
    "MODEL_CACHE_SIZE": ("model_cache_size", int),
    "MAX_PREDICT_ROWS": ("max_predict_rows", int),
    "REGISTRY_CACHE_SECONDS": ("registry_cache_seconds", float),
    "HEARTBEAT_SECONDS": ("heartbeat_seconds", float),
    "STALE_AFTER_SECONDS": ("stale_after_seconds", float),
    "REQUEUE_AFTER_SECONDS": ("requeue_after_seconds", float),
    "REAP_INTERVAL_SECONDS": ("reap_interval_seconds", float),
    "MAX_ATTEMPTS": ("max_attempts", int),
    "CHECKPOINT_SECONDS": ("checkpoint_seconds", float),
    "CLOCK_SKEW_SECONDS": ("clock_skew_seconds", float),
    "RATE_LIMIT_PER_MINUTE": ("rate_limit_per_minute", int),
    "RATE_LIMIT_LEASE": ("rate_limit_lease", int),
    "AUTH_FAILURES_PER_MINUTE": ("auth_failures_per_minute", int),
    "AUTH_CLEAN_SECONDS": ("auth_clean_seconds", float),
    "TRUSTED_PROXIES": ("trusted_proxies", int),
    "MAX_DATASET_BYTES": ("max_dataset_bytes", int),
    "MAX_DATASET_ROWS": ("max_dataset_rows", int),
    "SECRET_KEY": ("secret_key", str),
    "LOG_FORMAT": ("log_format", str),
    "LOG_LEVEL": ("log_level", str),
    "METRICS_TOKEN": ("metrics_token", str),
    "COOKIE_SECURE": ("cookie_secure", flag),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "WEB_CONCURRENCY": ("web_concurrency", int),
    "WEB_CONNECTIONS": ("web_connections", int),
    "WORKER_CONCURRENCY": ("worker_concurrency", int),
    "TF_NUM_THREADS": ("tf_num_threads", int),
    "PROMETHEUS_MULTIPROC_DIR": ("prometheus_multiproc_dir", str),
    "MAX_JOB_FLOPS": ("max_job_flops", int),
    "MAX_DATA_BYTES": ("max_data_bytes", int),
    "TENANT_MAX_RUNNING": ("tenant_max_running", int),
    "TENANT_MAX_QUEUED": ("tenant_max_queued", int),
    "DISPATCH_INTERVAL_SECONDS": ("dispatch_interval_seconds", float),
    "EVENTS_MAX_PER_TENANT": ("events_max_per_tenant", int),
    "EVENTS_MAX_SECONDS": ("events_max_seconds", float),
    "EVENTS_HEARTBEAT_SECONDS": ("events_heartbeat_seconds", float),
    "EVENTS_POLL_SECONDS": ("events_poll_seconds", float),
}


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the service; see `.env.example` for the variables."""

    database_url: str = field(default_factory=lambda: _default_database_url(DEFAULT_VAR_DIR))
    # Seconds to connect to PostgreSQL, and after which a connection whose server stopped
    # answering (network cut, host gone) is dropped: the API answers 503 instead of hanging, a
    # worker gives the job back instead of waiting (see README, "Several hosts").
    database_timeout_seconds: float = 10.0
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
    # Pool processes are replaced once they hold this much memory (KiB) after a job, so
    # TensorFlow's caches cannot make a worker grow without bound; and, if set above 0, after
    # this many jobs. Off by default: a replacement costs about a second (a fresh process
    # imports everything again), which a stream of tiny jobs paid every 20 jobs, while the
    # memory limit already bounds what a Keras job leaves behind.
    worker_max_tasks_per_child: int = 0
    # A pool process that trains Keras jobs is replaced after this many (0: never), as
    # TensorFlow keeps ~6 MiB a job that clear_session() does not free (worker/recycle.py);
    # it needs WORKER_MAX_MEMORY_PER_CHILD above 0.
    worker_max_keras_jobs_per_child: int = 20
    worker_max_memory_per_child: int = 2_000_000
    model_cache_size: int = 64
    max_predict_rows: int = 10_000
    # How long an API process reuses what a registered name (with an alias or a version)
    # resolved to, so predicting by name costs no database round trip; another process sees an
    # alias moved within this long (the process that moved it at once). 0: look up every time.
    registry_cache_seconds: float = 1.0
    # A running job writes a heartbeat this often; one silent for stale_after_seconds has lost
    # its worker and is put back in the queue (at most max_attempts runs in all).
    heartbeat_seconds: float = 5.0
    stale_after_seconds: float = 30.0
    # A queued job whose message was sent this long ago is sent again (the broker may have lost
    # it); duplicates are harmless, as only one worker can claim a queued job.
    requeue_after_seconds: float = 300.0
    reap_interval_seconds: float = 5.0
    max_attempts: int = 3
    # A running job stores a checkpoint this often (seconds of training; 0: every epoch; below
    # 0: never); a retried attempt resumes from the latest.
    checkpoint_seconds: float = 30.0
    # Tests only: shifts the worker process's own wall clock by this many seconds. Nothing that
    # decides a job's fate reads that clock (the database's is the one clock), so it must not
    # matter; the multi-host tests set it to prove so.
    clock_skew_seconds: float = 0.0
    # Requests per minute per API key (0: no limit); over it, 429 with Retry-After.
    rate_limit_per_minute: int = 3000
    # Counted in Redis, a process takes up to this many of a key's requests at once (a lease,
    # at most 1/64 of what is left of the minute's limit) and counts them locally; 1: every
    # request counted in Redis. A key never gets past its limit; it may be refused short of it
    # by the tokens other processes leased and have not used (at most one lease each).
    rate_limit_lease: int = 32
    # Failed authentications (a wrong API key, a failed dashboard sign-in) per minute per client
    # address (0: no limit); past it, that address is answered 429 with Retry-After, whatever key
    # it sends, until the minute ends.
    auth_failures_per_minute: int = 20
    # Counted in Redis, an address read as having no failed authentication this minute is taken
    # as clean for this many seconds by the process that read it (its known keys then skip the
    # Redis read); 0: read on every request. Failures are still counted at once, and a key this
    # process does not know always reads the address's count.
    auth_clean_seconds: float = 1.0
    # How many proxies in front of the API set X-Forwarded-For and X-Forwarded-Proto (0: none,
    # the client address is the connection's). Set it only when such proxies are there: the
    # headers are trusted from that many hops, and any client can send them.
    trusted_proxies: int = 0
    # An uploaded CSV may be at most this large and this long.
    max_dataset_bytes: int = 16 * 1024 * 1024
    max_dataset_rows: int = 200_000
    # Signs the dashboard's session cookie; every API process must share it. Empty: a random
    # key per process (fine for one process; `make run` writes one to var/secret-key).
    secret_key: str = ""
    # Send the dashboard's cookie over HTTPS only: set it once TLS is in front of the API.
    cookie_secure: bool = False
    # "json" (one object per line, with the job id where there is one) or "text".
    log_format: str = "json"
    log_level: str = "INFO"
    # Bearer token that GET /metrics asks for; empty: any API key may read /metrics.
    metrics_token: str = ""
    # Where the API binds (gunicorn; `make run` binds 127.0.0.1), its processes and the open
    # connections each may hold (gevent: one greenlet per connection, event streams included),
    # and the worker's pool processes.
    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = 2
    web_connections: int = 1000
    worker_concurrency: int = 1
    # Threads TensorFlow may use per worker pool process (0: TensorFlow decides).
    tf_num_threads: int = 0
    # Admission: a job needing more floating-point operations (6 x parameters x training rows x
    # epochs) or more memory for its data than these is refused with 422 (0: no limit).
    max_job_flops: int = 100_000_000_000_000
    max_data_bytes: int = 1024**3
    # Quotas per tenant: jobs in flight (sent to a worker or running; 0: no cap), and jobs
    # waiting (over it, 429). The dispatcher runs on every worker this often.
    tenant_max_running: int = 8
    tenant_max_queued: int = 1000
    dispatch_interval_seconds: float = 1.0
    # Event streams (/v1/jobs/{id}/events and the dashboard's): at most this many open per tenant
    # across all API processes (0: no cap; over it, 429), each ended after this many seconds (the
    # client resumes with Last-Event-ID; 0: never), a `: keepalive` comment after this many
    # quiet seconds, and how often each API process reads the jobs its streams watch.
    events_max_per_tenant: int = 100
    events_max_seconds: float = 300.0
    events_heartbeat_seconds: float = 15.0
    events_poll_seconds: float = 0.5
    # A folder shared by the API's gunicorn workers so /metrics adds them up (empty: one process).
    prometheus_multiproc_dir: str = ""

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, defaults: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings from environment variables, falling back to the documented defaults.

        `defaults` (variable name to value) replaces a documented default for this caller.
        """
        env = {**(defaults or {}), **(os.environ if env is None else env)}
        var_dir = Path(env.get("VAR_DIR", str(DEFAULT_VAR_DIR)))
        base = cls(var_dir=var_dir, database_url=_default_database_url(var_dir))
        changes: dict[str, Any] = {}
        for name, (attr, kind) in ENV_VARS.items():
            if env.get(name):
                try:
                    changes[attr] = kind(env[name])
                except ValueError:
                    raise ValueError(
                        f"{name}={env[name]!r} is not a valid {kind.__name__}"
                    ) from None
        if env.get("API_KEYS"):
            changes["api_keys"] = parse_api_keys(env["API_KEYS"])
        if "VISIBILITY_TIMEOUT" not in env and "job_time_limit" in changes:
            changes["visibility_timeout"] = changes["job_time_limit"] + 300
        settings = replace(base, **changes)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that would break the worker's delivery guarantees."""
        if self.stale_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("STALE_AFTER_SECONDS must be at least twice HEARTBEAT_SECONDS")
        if self.database_timeout_seconds <= 0:
            raise ValueError("DATABASE_TIMEOUT_SECONDS must be above 0")
        if self.log_format not in ("json", "text"):
            raise ValueError("LOG_FORMAT must be json or text")
        if self.max_attempts < 1:
            raise ValueError("MAX_ATTEMPTS must be at least 1")
        if self.worker_max_keras_jobs_per_child > 0 and self.worker_max_memory_per_child <= 0:
            raise ValueError(
                "WORKER_MAX_KERAS_JOBS_PER_CHILD needs WORKER_MAX_MEMORY_PER_CHILD above 0 (the "
                "pool's after-task memory check is what replaces the process)"
            )
        if self.job_soft_time_limit >= self.job_time_limit:
            raise ValueError("JOB_SOFT_TIME_LIMIT must be below JOB_TIME_LIMIT")
        if self.events_heartbeat_seconds <= 0 or self.events_poll_seconds <= 0:
            raise ValueError("EVENTS_HEARTBEAT_SECONDS and EVENTS_POLL_SECONDS must be above 0")
        if self.visibility_timeout <= self.job_time_limit:
            raise ValueError(
                "VISIBILITY_TIMEOUT must be longer than JOB_TIME_LIMIT, or Redis would hand a "
                "running job to a second worker"
            )
