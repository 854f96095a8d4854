"""GET /metrics (Prometheus text) and the JSON log format."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from core.db import Database
from core.logs import JsonFormatter, TextFormatter, job_context, make_handler
from core.settings import Settings
from service.app import create_app
from tests.conftest import RecordingQueue, auth
from tests.support import redis_url
from tests.unit.test_api import small_spec, submit
from worker.jobs import run_job

ALICE = auth("alice")


def scrape(client: FlaskClient, headers: dict[str, str] = ALICE) -> dict[str, float]:
    """Every sample of GET /metrics as {'name{label="v",...}': value}."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_metrics_count_jobs_by_status_and_training_time(
    client: FlaskClient, database: Database
) -> None:
    before = scrape(client)
    assert before['trainsvc_jobs{status="queued"}'] == 0
    assert before['trainsvc_job_train_seconds_count{status="succeeded"}'] == 0
    first = submit(client, small_spec()).get_json()
    submit(client, small_spec())
    assert run_job(database, first["id"], flush_seconds=0) == "succeeded"
    after = scrape(client)
    assert after['trainsvc_jobs{status="queued"}'] == 1
    assert after['trainsvc_jobs{status="succeeded"}'] == 1
    assert after['trainsvc_jobs{status="running"}'] == 0
    assert after['trainsvc_job_train_seconds_count{status="succeeded"}'] == 1
    assert 0 < after['trainsvc_job_train_seconds_sum{status="succeeded"}'] < 60
    assert after['trainsvc_job_train_seconds_bucket{le="60.0",status="succeeded"}'] == 1
    assert after['trainsvc_job_train_seconds_bucket{le="+Inf",status="succeeded"}'] == 1
    route = 'method="POST",route="/v1/jobs",status="202"'
    assert after[f"trainsvc_http_requests_total{{{route}}}"] - before.get(
        f"trainsvc_http_requests_total{{{route}}}", 0
    ) == pytest.approx(2)


def test_request_counts_keep_few_labels(client: FlaskClient) -> None:
    """A method token of the client's own counts as OTHER: labels cannot grow without bound."""
    before = scrape(client)
    for method in ("BREW", "WHEN", "BREW"):
        assert client.open("/v1/jobs", method=method, headers=ALICE).status_code == 405
    client.get("/v1/jobs", headers=ALICE)
    after = scrape(client)
    other = 'trainsvc_http_requests_total{method="OTHER",route="unmatched",status="405"}'
    assert after[other] - before.get(other, 0) == 3
    assert not any('method="BREW"' in name or 'method="WHEN"' in name for name in after)
    listed = 'trainsvc_http_requests_total{method="GET",route="/v1/jobs",status="200"}'
    assert after[listed] - before.get(listed, 0) == 1


def test_predict_latency_is_a_histogram(client: FlaskClient, database: Database) -> None:
    job = submit(client, small_spec()).get_json()
    run_job(database, job["id"], flush_seconds=0)
    model_id = client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()["model_id"]
    before = scrape(client).get("trainsvc_predict_latency_seconds_count{}", 0)
    for _ in range(3):
        answer = client.post(
            f"/v1/models/{model_id}/predict", json={"instances": [[0.0] * 20]}, headers=ALICE
        )
        assert answer.status_code == 200
    after = scrape(client)
    assert after["trainsvc_predict_latency_seconds_count{}"] - before == 3
    assert after['trainsvc_predict_latency_seconds_bucket{le="5.0"}'] >= 3


def test_metrics_need_a_key_or_the_metrics_token(settings: Settings) -> None:
    open_app = create_app(settings, queue=RecordingQueue())
    assert open_app.test_client().get("/metrics").status_code == 401
    guarded = create_app(settings.with_overrides(metrics_token="s3cret"), queue=RecordingQueue())
    client = guarded.test_client()
    assert client.get("/metrics", headers=ALICE).status_code == 401  # tenants see no totals
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_queue_depth_is_read_from_redis(settings: Settings, app: Flask) -> None:
    url = redis_url()
    if url is None:
        pytest.skip("Redis is not answering on this machine")
    queue_name = f"trainsvc-test-{uuid.uuid4().hex[:8]}"
    server = redis.Redis.from_url(url)
    server.rpush(queue_name, "a", "b", "c")
    try:
        watched = create_app(
            settings.with_overrides(broker_url=url, queue_name=queue_name), queue=RecordingQueue()
        )
        samples = scrape(watched.test_client())
    finally:
        server.delete(queue_name)
    assert samples["trainsvc_queue_depth{}"] == 3
    assert samples["trainsvc_broker_up{}"] == 1
    down = create_app(
        settings.with_overrides(broker_url="redis://127.0.0.1:1/0"), queue=RecordingQueue()
    )
    samples = scrape(down.test_client())
    assert samples["trainsvc_broker_up{}"] == 0 and "trainsvc_queue_depth{}" not in samples


def record(message: str, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("worker.jobs", logging.INFO, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


def test_json_logs_carry_the_job_id() -> None:
    handler = make_handler("json")
    with job_context("job-123"):
        inside = record("claimed")
        assert handler.filter(inside)
    outside = record("idle")
    assert handler.filter(outside)
    line = json.loads(JsonFormatter().format(inside))
    assert line["job_id"] == "job-123" and line["message"] == "claimed"
    assert line["level"] == "INFO" and line["logger"] == "worker.jobs" and "ts" in line
    assert "job_id" not in json.loads(JsonFormatter().format(outside))
    explicit = record("reaped", job_id="job-9")
    assert json.loads(JsonFormatter().format(explicit))["job_id"] == "job-9"
    assert TextFormatter().format(explicit).endswith("reaped [job job-9]")


def test_a_bad_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        Settings.from_env({"LOG_FORMAT": "xml"})
