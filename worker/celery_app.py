"""The worker's Celery application, built from our settings and the shared message contract."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from celery import Celery, bootsteps

from core.db import Database
from core.messages import TRAIN_TASK, broker_options, celery_config
from core.settings import Settings


class TrainingCelery(Celery):
    """Celery plus the settings and database its tasks use."""

    settings: Settings
    db: Database


def make_celery(settings: Settings) -> TrainingCelery:
    broker, _ = broker_options(settings)
    app = TrainingCelery("trainsvc", broker=broker, set_as_current=True)
    app.conf.update(celery_config(settings))
    app.conf.update(
        # Acknowledge only after the task ran, and give the message back if the worker process
        # dies: together with the conditional claim in the database, a job is never lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_max_memory_per_child=settings.worker_max_memory_per_child,
        # A running job keeps going if the broker connection drops: the database, not the
        # message, says who owns the job, so a redelivered message cannot start it twice.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
    )
    app.settings = settings
    app.db = Database(settings.database_url)
    app.steps["worker"].add(ReaperStep)
    return app


class ReaperStep(bootsteps.StartStopStep):
    """Runs the reaper on the worker's own timer, in the main process: every worker is one."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        app: TrainingCelery = worker.app
        self.tref = worker.timer.call_repeatedly(
            app.settings.reap_interval_seconds, self.reap, (app,), priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()

    @staticmethod
    def reap(app: TrainingCelery) -> None:
        from worker.reaper import reap_once

        def enqueue(job_id: str) -> None:
            app.send_task(TRAIN_TASK, args=[job_id], queue=app.settings.queue_name)

        try:
            reap_once(app.db, enqueue, app.settings)
        except Exception:
            logging.getLogger(__name__).exception("reaper pass failed")
