"""The Celery application, built from our settings; used by the worker and, to send, the API."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from celery import Celery, bootsteps

from service.config import Settings
from service.db import Database

TRAIN_TASK = "train_job"


class TrainingCelery(Celery):
    """Celery plus the settings and database its tasks use."""

    settings: Settings
    db: Database


def broker_options(url: str, settings: Settings) -> tuple[str, dict[str, Any]]:
    """Broker URL and transport options; `filesystem:///dir` is the embedded single-host broker."""
    if url.startswith("filesystem://"):
        folder = Path(url.removeprefix("filesystem://") or settings.var_dir / "broker")
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        return "filesystem://", {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    # Redis re-delivers unacknowledged messages after the visibility timeout; it must outlast
    # the hard time limit (Settings.check enforces it) or a running job would be delivered twice.
    return url, {"visibility_timeout": settings.visibility_timeout}


def make_celery(settings: Settings) -> TrainingCelery:
    broker, transport_options = broker_options(settings.effective_broker_url, settings)
    app = TrainingCelery("trainsvc", broker=broker, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
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
        task_default_queue=settings.queue_name,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
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


def broker_ready(app: Celery) -> bool:
    """True if the broker accepts a connection now."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
