"""Monitoring against real processes: the worker's JSON logs, /metrics across gunicorn workers."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import auth
from tests.integration.conftest import Stack, submit
from tests.live import Gunicorn
from tests.support import SEED_SPEC, wait_for_job

pytestmark = pytest.mark.integration
ALICE = auth("alice")


def small_job() -> dict[str, Any]:
    return {**SEED_SPEC, "epochs": 2, "name": "monitoring"}


def test_worker_logs_are_json_lines_with_the_job_id(stack: Stack) -> None:
    job = submit(stack, small_job())
    wait_for_job(stack.client, job["id"], ALICE)
    lines = [json.loads(line) for line in stack.worker.log().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("job_id") == job["id"]]
    messages = " | ".join(line["message"] for line in mine)
    assert any("claimed" in line["message"] for line in mine), messages
    assert any("succeeded" in line["message"] for line in mine), messages
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)


def get(url: str, headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def predict_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trainsvc_predict_latency_seconds_count":
                return sample.value
    return 0.0


def test_metrics_add_up_across_gunicorn_workers(stack: Stack, tmp_path: Path) -> None:
    job = submit(stack, small_job())
    model_id = wait_for_job(stack.client, job["id"], ALICE)["model_id"]
    assert model_id
    folder = tmp_path / "prometheus"
    server = Gunicorn(
        stack.settings,
        tmp_path / "gunicorn.log",
        workers=2,
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        LOG_FORMAT="json",
    )
    try:
        server.wait_ready()
        body = json.dumps({"instances": [[0.0] * 20]}).encode()
        for _ in range(20):
            request = urllib.request.Request(
                f"{server.url}/v1/models/{model_id}/predict",
                data=body,
                headers={**ALICE, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        # Whichever worker answers the scrape, it reports what both workers served.
        counts = {predict_count(get(f"{server.url}/metrics", ALICE).decode()) for _ in range(6)}
        text = get(f"{server.url}/metrics", ALICE).decode()
    finally:
        server.stop()
    assert counts == {20.0}
    assert 'trainsvc_jobs{status="succeeded"}' in text
    access = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any("/predict" in line["message"] for line in access), server.log()[-2000:]
