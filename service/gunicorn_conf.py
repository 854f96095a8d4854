"""Gunicorn settings for the API.

`gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'`

gevent workers: each connection is a greenlet, so an open Server-Sent Events stream (hours, for
a dashboard tab) or a client that sends its request slowly parks a few KiB, not one of a few
request threads. `WEB_CONCURRENCY` processes each hold up to `WEB_CONNECTIONS` connections.
Work that would hold a process's one thread for long runs in gevent's native thread pool
(`service/offload.py`: plots, predictions, CSV parsing). See `service/events.py` for the streams.
"""

from __future__ import annotations

import os
import shutil

# One BLAS thread per API process, set before any worker imports NumPy. The API's matrix work is
# small (a prediction's rows, a plot): OpenBLAS's extra threads do not speed it up, and their
# wake-ups and spinning after each call take CPU from the requests themselves. Measured with
# benchmarks/predict_http (a one-row predict: p50 1.1 -> 0.75 ms; 1,000 rows faster too);
# an OPENBLAS_NUM_THREADS of the environment's still wins. Training workers keep theirs.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from core.settings import Settings  # after the BLAS setting: nothing above may import NumPy

_settings = Settings.from_env()
bind = f"{_settings.host}:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "gevent"
worker_connections = _settings.web_connections
# A worker whose event loop is stuck this long is restarted (open streams do not count: a
# waiting greenlet leaves the loop free).
timeout = 60
# On shutdown, open event streams are cut after this long; their clients resume elsewhere.
graceful_timeout = 10
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
