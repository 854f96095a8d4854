"""A cancel is seen within about a second however long an epoch is, on both engines."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from core.db import Database
from tests.conftest import auth
from worker.jobs import run_job

ALICE = auth("alice")


def long_epoch_spec(engine: str) -> dict[str, Any]:
    """One epoch of 160,000 batches of one row: far longer than the few seconds a test waits."""
    return {
        "engine": engine,
        "dataset": {
            "builtin": "make_classification",
            "params": {"n_samples": 200_000, "n_features": 10, "random_state": 1},
        },
        "layers": [
            {"type": "dense", "units": 16, "activation": "relu"},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ],
        "loss": "sparse_categorical_crossentropy",
        "epochs": 2,
        "batch_size": 1,
    }


@pytest.mark.parametrize("engine", ["numpy", "keras"])
def test_cancel_mid_epoch_stops_within_seconds(
    engine: str, client: FlaskClient, database: Database
) -> None:
    if engine == "keras":
        pytest.importorskip("tensorflow")
    job = client.post("/v1/jobs", json=long_epoch_spec(engine), headers=ALICE).get_json()
    outcome: dict[str, Any] = {}

    def train() -> None:
        outcome["status"] = run_job(database, job["id"], flush_seconds=0, heartbeat_seconds=1)
        outcome["ended"] = time.monotonic()

    worker = threading.Thread(target=train)
    worker.start()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0 if engine == "numpy" else 8.0)  # well inside the first epoch (Keras starts up)
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE).status_code == 202
    asked = time.monotonic()
    worker.join(timeout=60)
    assert outcome["status"] == "cancelled"
    assert outcome["ended"] - asked < 3.0
    done = client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()
    assert done["error"] == {"code": "cancelled", "message": "cancelled on request during an epoch"}
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics", headers=ALICE).get_json()
    assert metrics["history"] == []  # the interrupted epoch is not recorded as finished
