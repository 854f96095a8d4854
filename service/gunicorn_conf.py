"""Gunicorn settings for the API.

`gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'`

Threaded workers, because a Server-Sent Events stream holds its thread for as long as the client
watches a job; sync workers would let two watchers stall every other request.
"""

from __future__ import annotations

import os
import shutil

from core.settings import Settings

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "8"))
# An idle SSE stream sends a comment every 15 s, well inside this.
timeout = 60
accesslog = "-"

_settings = Settings.from_env()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"job": {"()": "core.logs.JobIdFilter"}},
    "formatters": {
        "json": {"()": "core.logs.JsonFormatter"},
        "text": {"()": "core.logs.TextFormatter"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": _settings.log_format,
            "filters": ["job"],
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": _settings.log_level.upper(), "handlers": ["stderr"]},
    "loggers": {
        # LOG_LEVEL=WARNING silences the access log too.
        name: {"level": _settings.log_level.upper(), "handlers": ["stderr"], "propagate": False}
        for name in ("gunicorn.error", "gunicorn.access")
    },
}


def on_starting(_server: object) -> None:
    """Start with an empty multi-process metrics folder: old workers' files would add up."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)


def child_exit(_server: object, worker: object) -> None:
    """Drop a finished worker's live gauges from the multi-process metrics folder."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
