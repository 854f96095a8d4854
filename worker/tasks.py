"""Celery tasks: thin wrappers that take a job id and hand it to the domain."""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.worker.request import Request

from core.dispatch import dispatch_once
from core.logs import job_context
from core.messages import TRAIN_TASK
from worker import recycle
from worker.celery_app import TrainingCelery
from worker.jobs import hand_back, run_job, running_on
from worker.sweeps import trial_ended

log = logging.getLogger(__name__)


class TrainRequest(Request):
    """A training message as the worker's main process tracks it.

    When the pool process running it dies (SIGKILL, out of memory), the main process learns it
    at once (WorkerLostError): it hands the job back in the database (queued again, or failed
    after MAX_ATTEMPTS) before Celery gives the message back to the broker, so the job trains
    again within seconds instead of after its heartbeat goes stale. The heartbeat path stays
    for a whole host lost.
    """

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        lost = isinstance(exc, WorkerLostError) or (
            isinstance(exc, SystemExit | KeyboardInterrupt)
            and not (self._already_cancelled or self._already_revoked)
        )
        if lost and self.worker_pid is not None and self.args:
            app: TrainingCelery = self.task.app
            try:
                hand_back(
                    app.db,
                    str(self.args[0]),
                    running_on(self.hostname, self.worker_pid) or "",
                    str(exc) or type(exc).__name__,
                    app.settings.max_attempts,
                )
            except Exception:  # the database is down: the reaper hands it back once it is stale
                log.exception("job %s: could not hand back after its process died", self.args[0])
        return super().on_failure(
            exc_info, send_failed_event=send_failed_event, return_ok=return_ok
        )


@shared_task(
    name=TRAIN_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    Request="worker.tasks:TrainRequest",
)
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
                checkpoint_seconds=app.settings.checkpoint_seconds,
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
            recycle.after_task(app.settings.worker_max_keras_jobs_per_child)
