"""The worker's entry module (`celery -A worker.main worker`): the one place that reads settings.

TensorFlow is never imported here: the Keras engine imports it inside the task, after fork.
"""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from core import clock, logs
from core.settings import Settings
from worker.celery_app import make_celery
from worker.engines import keras_engine

settings = Settings.from_env()
clock.set_skew(settings.clock_skew_seconds)  # tests only; the pool processes inherit it
celery = make_celery(settings)
keras_engine.configure(settings.tf_num_threads)  # read by the pool processes after the fork


@setup_logging.connect
def _logging(**_kwargs: Any) -> None:
    """Our format (JSON by default, with the job id) instead of Celery's own."""
    logs.configure(settings.log_format, settings.log_level)


# Loaded once in the parent so that every forked pool process starts with them warm.
import sklearn.datasets  # noqa: E402
import sklearn.model_selection  # noqa: E402,F401

import worker.tasks  # noqa: E402,F401 - registers the tasks on the app above
