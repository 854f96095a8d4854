"""Celery tasks: thin wrappers that take a job id and hand it to the domain."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from core.dispatch import dispatch_once
from core.logs import job_context
from core.messages import TRAIN_TASK
from worker.celery_app import TrainingCelery
from worker.jobs import run_job
from worker.sweeps import trial_ended

log = logging.getLogger(__name__)


@shared_task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def train_job(self: Task, job_id: str) -> str | None:
    """Train the job with this id; a duplicate or late message finds it claimed and does nothing."""
    app: TrainingCelery = self.app
    with job_context(job_id):
        try:
            return run_job(
                app.db,
                job_id,
                flush_seconds=app.settings.metrics_flush_seconds,
                heartbeat_seconds=app.settings.heartbeat_seconds,
                timeout_errors=(SoftTimeLimitExceeded,),
                worker_name=self.request.hostname,
            )
        finally:
            # A slot is free now: send the next job at once rather than at the next timer tick
            # (a sweep's trial first lets its sweep's controller create the next trial).
            try:
                trial_ended(app.db, job_id)
            except Exception:
                log.exception("sweep controller step after the trial failed")
            try:
                dispatch_once(app.db, app.enqueue, app.quotas)
            except Exception:
                log.exception("dispatcher pass after the job failed")
