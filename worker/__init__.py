"""The training side: the Celery app and tasks, the engines, the reaper.

It stands on `core/` and never imports `service/`. Nothing here imports TensorFlow at package
import: only the Keras engine does, inside the task.
"""
