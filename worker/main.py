"""The worker's entry module (`celery -A worker.main worker`): the one place that reads settings.

TensorFlow is never imported here: the Keras engine imports it inside the task, after fork.
"""

from __future__ import annotations

import logging

from service.config import Settings
from worker.celery_app import make_celery

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

celery = make_celery(Settings.from_env())

# Loaded once in the parent so that every forked pool process starts with them warm.
import sklearn.datasets  # noqa: E402
import sklearn.model_selection  # noqa: E402,F401

import worker.tasks  # noqa: E402,F401 - registers the tasks on the app above
