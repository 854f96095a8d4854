"""Sending job ids to the workers: a Celery producer built from the shared message contract.

The API sends `train_job(job_id)` by name and never imports the worker's code.
"""

from __future__ import annotations

from typing import Protocol

import redis
from celery import Celery

from core.messages import TRAIN_TASK, broker_options, celery_config
from core.settings import Settings
from service.redis_pool import redis_client

READY_TIMEOUT = 2.0  # seconds a readiness check waits on the broker


class JobQueue(Protocol):
    def enqueue(self, job_id: str) -> None: ...

    def ready(self) -> bool: ...


class BrokerUnavailable(Exception):
    """The broker did not take the message."""


class CeleryQueue:
    """Sends `train_job(job_id)` through Celery to the training queue."""

    def __init__(self, settings: Settings) -> None:
        broker, _ = broker_options(settings)
        self.app = Celery("trainsvc-api", broker=broker, set_as_current=False)
        self.app.conf.update(celery_config(settings))
        self.queue_name = settings.queue_name
        # A Redis broker is checked with a PING on pooled connections: a new Celery connection
        # per /readyz took seconds on a loaded machine (500 streams opening at once).
        self.redis = (
            redis_client(broker, timeout=READY_TIMEOUT)
            if broker.startswith(("redis://", "rediss://"))
            else None
        )

    def enqueue(self, job_id: str) -> None:
        try:
            self.app.send_task(TRAIN_TASK, args=[job_id], queue=self.queue_name)
        except Exception as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def ready(self) -> bool:
        """True if the broker accepts a connection now."""
        if self.redis is not None:
            try:
                return bool(self.redis.ping())
            except redis.RedisError:
                return False
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False
