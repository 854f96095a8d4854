"""Gunicorn settings for the API.

`gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'`

Threaded workers, because a Server-Sent Events stream holds its thread for as long as the client
watches a job; sync workers would let two watchers stall every other request.
"""

from __future__ import annotations

import os
import shutil

from core.settings import Settings

_settings = Settings.from_env()
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "gthread"
threads = _settings.web_threads
# An idle SSE stream sends a comment every 15 s, well inside this.
timeout = 60
accesslog = "-"
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
    folder = _settings.prometheus_multiproc_dir
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)


def child_exit(_server: object, worker: object) -> None:
    """Drop a finished worker's live gauges from the multi-process metrics folder."""
    if _settings.prometheus_multiproc_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
