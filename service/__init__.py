"""The HTTP side: the Flask API, the dashboard, authentication and the OpenAPI document.

It stands on `core/` and never imports `worker/`: jobs reach the workers as Celery messages
sent by the task's name.
"""
