"""The HTTP contract without a worker: status codes, error shape, auth and tenant isolation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.db import Database
from tests.conftest import RecordingQueue, auth
from tests.support import SEED_SPEC
from worker.jobs import run_job

ALICE, BOB = auth("alice"), auth("bob")


def small_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SEED_SPEC)
    spec.update({"epochs": 2, **changes})
    return spec


def submit(client: FlaskClient, spec: dict[str, Any], headers: dict[str, str] = ALICE) -> Any:
    return client.post("/v1/jobs", json=spec, headers=headers)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    error: dict[str, Any] = body["error"]
    return error


def test_submit_records_then_queues(client: FlaskClient, queue: RecordingQueue) -> None:
    response = submit(client, small_spec())
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert queue.sent == [job["id"]]
    expected = {
        "id",
        "name",
        "status",
        "engine",
        "created_at",
        "started_at",
        "finished_at",
        "progress",
        "metrics",
        "error",
        "model_id",
        "attempts",
        "spec",
    }
    assert expected <= set(job)
    assert job["status"] == "queued" and job["progress"] == {"epoch": 0, "epochs": 2}
    assert job["spec"]["optimizer"]["beta_1"] == 0.9  # stored with defaults filled in
    assert client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()["id"] == job["id"]


def test_dry_run_summarises_without_queuing(client: FlaskClient, queue: RecordingQueue) -> None:
    response = client.post("/v1/jobs?dry_run=true", json=SEED_SPEC, headers=ALICE)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["total_params"], body["non_trainable_params"]) == (4451, 224)
    assert body["layers"][0] == {
        "name": "dense",
        "type": "dense",
        "output_shape": [None, 64],
        "params": 1344,
        "trainable_params": 1344,
    }
    assert queue.sent == []
    assert client.get("/v1/jobs", headers=ALICE).get_json()["items"] == []


def test_invalid_spec_is_422_with_field_paths(client: FlaskClient, queue: RecordingQueue) -> None:
    spec = small_spec(loss="hinge")
    spec["layers"][3]["activation"] = "mish"
    error = assert_error(submit(client, spec), 422, "invalid_spec")
    fields = {d["field"] for d in error["details"]}
    assert fields == {"loss", "layers[3].activation"}
    assert queue.sent == []


def test_malformed_json_is_400(client: FlaskClient) -> None:
    response = client.post(
        "/v1/jobs", data="{not json", headers={**ALICE, "Content-Type": "application/json"}
    )
    assert_error(response, 400, "bad_request")


def test_wrong_content_type_is_415(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", data="a=b", headers={**ALICE, "Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


def test_body_too_large_is_413(client: FlaskClient) -> None:
    big = json.dumps({"pad": "x" * (2 * 1024 * 1024)})
    response = client.post(
        "/v1/jobs", data=big, headers={**ALICE, "Content-Type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer wrong-key", "Basic a2V5"])
def test_missing_or_bad_key_is_401(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    assert_error(client.get("/v1/jobs", headers=headers), 401, "unauthorized")
    assert_error(client.post("/v1/jobs", json=SEED_SPEC, headers=headers), 401, "unauthorized")


def test_a_revoked_key_stops_working_though_its_digest_is_remembered(
    app: Flask, client: FlaskClient, database: Database
) -> None:
    """The process remembers the digest of each header a known key came in (no hashing per
    request); whether the key still counts is the key cache's and the database's word."""
    from sqlalchemy import delete

    from core.models import ApiKey
    from service import auth as service_auth

    assert client.get("/v1/jobs", headers=ALICE).status_code == 200
    assert ALICE["Authorization"] in service_auth._digests
    assert_error(
        client.get("/v1/jobs", headers={"Authorization": "Bearer nope"}), 401, "unauthorized"
    )
    assert "Bearer nope" not in service_auth._digests  # only keys that were found
    with database.begin() as rows:
        rows.execute(delete(ApiKey).where(ApiKey.tenant_id == "alice"))
    app.extensions["trainsvc.keys"]._items.clear()  # as its 30 s would
    assert_error(client.get("/v1/jobs", headers=ALICE), 401, "unauthorized")


def test_health_needs_no_key(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["database"] == "ok"


def test_tenants_see_only_their_own_jobs(client: FlaskClient) -> None:
    job = submit(client, small_spec()).get_json()
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/metrics"):
        assert_error(client.get(path, headers=BOB), 404, "not_found")
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=BOB), 404, "not_found")
    assert client.get("/v1/jobs", headers=BOB).get_json()["items"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=ALICE).status_code == 200


def test_unknown_id_is_404(client: FlaskClient) -> None:
    assert_error(client.get("/v1/jobs/nope", headers=ALICE), 404, "not_found")
    assert_error(client.get("/v1/models/nope", headers=ALICE), 404, "not_found")
    assert_error(client.get("/v1/nothing-here", headers=ALICE), 404, "not_found")


def test_list_is_newest_first_with_a_cursor(client: FlaskClient) -> None:
    ids = [submit(client, small_spec(name=f"job-{i}")).get_json()["id"] for i in range(5)]
    first = client.get("/v1/jobs?limit=2", headers=ALICE).get_json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    second = client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=ALICE)
    assert [j["id"] for j in second.get_json()["items"]] == ids[::-1][2:4]
    last = client.get(
        f"/v1/jobs?limit=2&cursor={second.get_json()['next_cursor']}", headers=ALICE
    ).get_json()
    assert [j["id"] for j in last["items"]] == ids[:1] and last["next_cursor"] is None
    assert len(client.get("/v1/jobs?status=queued", headers=ALICE).get_json()["items"]) == 5
    assert client.get("/v1/jobs?status=running", headers=ALICE).get_json()["items"] == []
    assert_error(client.get("/v1/jobs?status=weird", headers=ALICE), 422, "validation_error")
    assert_error(client.get("/v1/jobs?limit=0", headers=ALICE), 422, "validation_error")


def test_cancel_a_queued_job_then_409(client: FlaskClient) -> None:
    job = submit(client, small_spec()).get_json()
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "cancelled" and body["error"]["code"] == "cancelled"
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE), 409, "conflict")


def trained_model(client: FlaskClient, database: Database, spec: dict[str, Any]) -> str:
    job = submit(client, spec).get_json()
    assert run_job(database, job["id"]) == "succeeded"
    finished = client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()
    assert finished["status"] == "succeeded" and finished["attempts"] == 1
    return str(finished["model_id"])


def test_model_metadata_and_predictions(client: FlaskClient, database: Database) -> None:
    model_id = trained_model(client, database, small_spec())
    model = client.get(f"/v1/models/{model_id}", headers=ALICE).get_json()
    assert {
        "id",
        "job_id",
        "engine",
        "task",
        "n_features",
        "classes",
        "layers",
        "params",
        "metrics",
    } <= set(model)
    assert model["classes"] == [0, 1, 2] and model["params"]["total"] == 4451
    assert_error(client.get(f"/v1/models/{model_id}", headers=BOB), 404, "not_found")

    row = [0.5] * 20
    response = client.post(
        f"/v1/models/{model_id}/predict", json={"instances": [row, row]}, headers=ALICE
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["model_id"] == model_id and len(body["predictions"]) == 2
    assert body["predictions"][0] in (0, 1, 2)
    assert sum(body["probabilities"][0]) == pytest.approx(1.0, abs=1e-5)
    predict = f"/v1/models/{model_id}/predict"
    assert_error(client.post(predict, json={"instances": [row]}, headers=BOB), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instances": [[0.5] * 19]}, "instances[0]"),
        ({"instances": []}, "instances"),
        ({"rows": [[0.5] * 20]}, "instances"),
        ({"instances": [["a"] * 20]}, "instances[0][0]"),
        ([1, 2], "$"),
    ],
)
def test_bad_prediction_requests_are_422(
    client: FlaskClient, database: Database, body: Any, field: str
) -> None:
    model_id = trained_model(client, database, small_spec())
    response = client.post(f"/v1/models/{model_id}/predict", json=body, headers=ALICE)
    error = assert_error(response, 422, "validation_error")
    assert field in {d["field"] for d in error["details"]}


def test_nan_in_predictions_is_422_not_500(client: FlaskClient, database: Database) -> None:
    model_id = trained_model(client, database, small_spec())
    raw = '{"instances": [[NaN' + ", 0.5" * 19 + "]]}"
    response = client.post(
        f"/v1/models/{model_id}/predict",
        data=raw,
        headers={**ALICE, "Content-Type": "application/json"},
    )
    assert_error(response, 422, "validation_error")


def test_idempotency_key_returns_the_same_job(client: FlaskClient, queue: RecordingQueue) -> None:
    spec = small_spec()
    headers = {**ALICE, "Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json=spec, headers=headers)
    reordered = json.loads(json.dumps(spec, sort_keys=True))  # same body, other key order
    second = client.post("/v1/jobs", json=reordered, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] == second.get_json()["id"]
    assert queue.sent == [first.get_json()["id"]]
    other = client.post("/v1/jobs", json=small_spec(epochs=3), headers=headers)
    error = assert_error(other, 422, "idempotency_key_reused")
    assert error["details"][0]["field"] == "Idempotency-Key"
    # Keys belong to a tenant: bob may use the same key for his own job.
    bob = client.post("/v1/jobs", json=spec, headers={**BOB, "Idempotency-Key": "order-42"})
    assert bob.status_code == 202 and bob.get_json()["id"] != first.get_json()["id"]


def test_a_job_is_accepted_while_the_broker_is_down(
    client: FlaskClient, queue: RecordingQueue, database: Database
) -> None:
    from service.queue import BrokerUnavailable

    def refuse(job_id: str) -> None:
        raise BrokerUnavailable("connection refused")

    queue.enqueue = refuse  # type: ignore[method-assign]
    response = submit(client, small_spec())
    assert response.status_code == 202 and response.get_json()["status"] == "queued"
    from core.models import Job

    with database.begin() as session:
        job = session.get(Job, response.get_json()["id"])
        assert job is not None and job.enqueued_at is None  # the reaper sends it at once


def test_rate_limit_answers_429_with_retry_after(app: Flask, client: FlaskClient) -> None:
    from service.ratelimit import MemoryRateLimiter

    app.extensions["trainsvc.ratelimit"] = MemoryRateLimiter(per_minute=3)
    for _ in range(3):
        assert client.get("/v1/jobs", headers=ALICE).status_code == 200
    limited = client.get("/v1/jobs", headers=ALICE)
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert client.get("/v1/jobs", headers=BOB).status_code == 200  # per key, not global
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "blob",
    [b"garbage", b"\x80\x04\x95 pickle-ish", None],
    ids=["garbage", "pickle", "wrong-shapes"],
)
def test_a_tampered_model_gives_a_clear_error(
    client: FlaskClient, database: Database, blob: bytes | None
) -> None:
    import numpy as np

    from core.artifact import Artifact
    from core.models import Model

    model_id = trained_model(client, database, small_spec())
    with database.begin() as session:
        row = session.get(Model, model_id)
        assert row is not None
        if blob is None:
            artifact = Artifact.from_bytes(row.weights)
            artifact.arrays["layers.0.kernel"] = np.zeros((3, 3), np.float32)
            blob = artifact.to_bytes()
        row.weights = blob
    response = client.post(
        f"/v1/models/{model_id}/predict", json={"instances": [[0.0] * 20]}, headers=ALICE
    )
    error = assert_error(response, 500, "model_unreadable")
    assert model_id in error["message"]
