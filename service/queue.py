"""Sending job ids to the workers: a Celery producer built from the shared message contract.

The API sends `train_job(job_id)` by name and never imports the worker's code.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery

from core.messages import TRAIN_TASK, broker_options, celery_config
from core.settings import Settings


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

    def enqueue(self, job_id: str) -> None:
        try:
            self.app.send_task(TRAIN_TASK, args=[job_id], queue=self.queue_name)
        except Exception as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def ready(self) -> bool:
        """True if the broker accepts a connection now."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False
