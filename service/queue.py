"""Sending job ids to the workers."""

from __future__ import annotations

from typing import Protocol

from service.config import Settings


class JobQueue(Protocol):
    def enqueue(self, job_id: str) -> None: ...

    def ready(self) -> bool: ...


class BrokerUnavailable(Exception):
    """The broker did not take the message."""


class CeleryQueue:
    """Sends `train_job(job_id)` through Celery, by name: the API never imports the tasks."""

    def __init__(self, settings: Settings) -> None:
        from worker.celery_app import make_celery

        self.app = make_celery(settings)
        self.queue_name = settings.queue_name

    def enqueue(self, job_id: str) -> None:
        from worker.celery_app import TRAIN_TASK

        try:
            self.app.send_task(TRAIN_TASK, args=[job_id], queue=self.queue_name)
        except Exception as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def ready(self) -> bool:
        from worker.celery_app import broker_ready

        return broker_ready(self.app)
