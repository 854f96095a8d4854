"""The message contract between the API and the workers: the task's name, its one argument (the
job id), and the Celery settings both the sending and the consuming side must agree on.

Plain data only: the API builds a small Celery producer from it, the worker its Celery app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import Settings

TRAIN_TASK = "train_job"


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Broker URL and transport options; `filesystem:///dir` is the embedded single-host broker."""
    url = settings.effective_broker_url
    if url.startswith("filesystem://"):
        folder = Path(url.removeprefix("filesystem://") or settings.var_dir / "broker")
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        return "filesystem://", {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            # Exchange tables: kombu's default is `control/` in the working directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    # Redis re-delivers unacknowledged messages after the visibility timeout; it must outlast
    # the hard time limit (Settings.check enforces it) or a running job would be delivered twice.
    return url, {"visibility_timeout": settings.visibility_timeout, "polling_interval": 0.1}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings shared by the producer (API) and the consumer (worker)."""
    _, transport_options = broker_options(settings)
    return {
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "task_default_queue": settings.queue_name,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    }
