"""The domain both processes stand on: the job spec and its registries, datasets, SQL models and
sessions, settings, logging, the portable model artifact and the NumPy inference runtime, and the
training task's name.

Nothing here imports Flask, Celery or TensorFlow (`make lint` checks it with import-linter):
`service/` (HTTP) and `worker/` (training) both depend on this package, never on each other.
"""
