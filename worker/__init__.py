"""The training side: Celery tasks, engines, datasets, and the portable model runtime.

Nothing here imports Celery or TensorFlow at package import: the API process uses the
artifact and runtime modules.
"""
