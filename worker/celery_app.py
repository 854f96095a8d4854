"""The worker's Celery application, built from our settings and the shared message contract."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from celery import Celery, bootsteps
from celery.signals import worker_shutting_down

from core.db import Database
from core.dispatch import Quotas, dispatch_once, forget_worker, register_worker
from core.messages import TRAIN_TASK, broker_options, celery_config
from core.settings import Settings

log = logging.getLogger(__name__)

POOL_CHECK_SECONDS = 0.25


class TrainingCelery(Celery):
    """Celery plus the settings and database its tasks use."""

    settings: Settings
    db: Database

    @property
    def quotas(self) -> Quotas:
        return Quotas.from_settings(self.settings)

    def enqueue(self, job_id: str) -> None:
        """Send a job's id to the training queue."""
        self.send_task(TRAIN_TASK, args=[job_id], queue=self.settings.queue_name)


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
        # 0 is "never" here; Celery's pool would take 0 as "after no task at all".
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child or None,
        worker_max_memory_per_child=settings.worker_max_memory_per_child,
        # A running job keeps going if the broker connection drops: the database, not the
        # message, says who owns the job, so a redelivered message cannot start it twice.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        # How long the main process waits for a dead pool process's result before it raises
        # WorkerLostError (default 10 s): results are ignored here, so there is none to wait for,
        # and the sooner it is raised the sooner the job is handed back (worker/tasks.py).
        worker_lost_wait=0.2,
    )
    app.settings = settings
    app.db = Database(settings.database_url, settings.database_timeout_seconds)
    app.steps["worker"].add(HousekeepingStep)
    return app


class HousekeepingStep(bootsteps.StartStopStep):
    """On the worker's own timer, in its main process (so every worker does it):
    register this worker, advance the unfinished sweeps (worker/sweeps.py) and dispatch queued
    jobs every DISPATCH_INTERVAL_SECONDS, and run the reaper every REAP_INTERVAL_SECONDS."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.trefs: list[Any] = []
        self.name = ""
        self.app: TrainingCelery | None = None

    def start(self, worker: Any) -> None:
        app: TrainingCelery = worker.app
        self.name = worker.hostname
        self.app = app
        worker_shutting_down.connect(self.shutting_down, sender=self.name, weak=False)
        concurrency = int(worker.concurrency or 1)
        settings = app.settings
        self.dispatch(app, self.name, concurrency)  # registered (its slots count) at once
        self.trefs = [
            worker.timer.call_repeatedly(
                settings.dispatch_interval_seconds,
                self.dispatch,
                (app, self.name, concurrency),
                priority=10,
            ),
            worker.timer.call_repeatedly(
                settings.reap_interval_seconds, self.reap, (app,), priority=10
            ),
            worker.timer.call_repeatedly(
                POOL_CHECK_SECONDS, self.check_pool, (worker,), priority=10
            ),
        ]

    def stop(self, worker: Any) -> None:
        for tref in self.trefs:
            tref.cancel()
        if self.name:
            try:
                forget_worker(worker.app.db, self.name)
            except Exception:
                log.exception("could not unregister worker %s", self.name)

    @staticmethod
    def dispatch(app: TrainingCelery, name: str, concurrency: int) -> None:
        from worker.sweeps import advance_all

        try:
            register_worker(app.db, name, concurrency)
            advance_all(app.db)
            dispatch_once(app.db, app.enqueue, app.quotas)
        except Exception:
            log.exception("dispatcher pass failed")

    def shutting_down(self, sender: Any = None, how: str = "", **_kwargs: Any) -> None:
        """A warm shutdown (SIGTERM) waits for running tasks: have each job checkpoint at its
        next epoch's end and go back to the queue, rather than hold the shutdown for hours."""
        if how != "Warm" or self.app is None:
            return
        from worker.jobs import request_handback

        try:
            asked = request_handback(self.app.db, self.name)
            log.info("shutting down: %d running job(s) asked to checkpoint and go back", asked)
        except Exception:
            log.exception("could not ask the running jobs to go back")

    @staticmethod
    def check_pool(worker: Any) -> None:
        """Look for dead pool processes now, not at the pool's own 5-second tick.

        A pool process found dead is marked lost at the next look after `worker_lost_wait`;
        its job is then handed back (worker/tasks.py): a few looks, well under a second.
        """
        pool = getattr(worker.pool, "_pool", None)  # prefork's billiard pool, once started
        if pool is not None and hasattr(pool, "maintain_pool"):
            try:
                pool.maintain_pool()
            except Exception:
                log.exception("pool check failed")

    @staticmethod
    def reap(app: TrainingCelery) -> None:
        from worker.reaper import reap_once

        try:
            reap_once(app.db, app.enqueue, app.settings)
        except Exception:
            log.exception("reaper pass failed")
