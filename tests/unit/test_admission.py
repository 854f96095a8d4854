"""Admission by cost and the queued quota, at the API: the dry run shows the cost, a job over a
limit is refused saying which and by how much, a tenant over its queued cap gets 429."""

from __future__ import annotations

import copy
from pathlib import Path

from flask.testing import FlaskClient

from core.db import Database
from core.dispatch import register_worker
from core.settings import Settings
from service.app import create_app
from tests.conftest import RecordingQueue, auth
from tests.support import SEED_SPEC
from tests.unit.test_dashboard import sign_in, submit_form

ALICE, BOB = auth("alice"), auth("bob")


def test_the_dry_run_and_the_job_carry_the_cost(client: FlaskClient) -> None:
    dry = client.post("/v1/jobs?dry_run=true", json=SEED_SPEC, headers=ALICE).get_json()
    assert dry["cost"] == {
        "params": 4451,
        "fit_rows": 640,
        "flops_per_epoch": 6 * 4451 * 640,
        "flops": 50 * 6 * 4451 * 640,
        "data_bytes": 1000 * 21 * 12,
        "estimated_seconds": None,  # no worker has measured its speed yet
    }
    job = client.post("/v1/jobs", json=SEED_SPEC, headers=ALICE).get_json()
    assert job["cost"] == dry["cost"]


def test_the_estimate_uses_the_workers_measured_speed(
    client: FlaskClient, database: Database
) -> None:
    register_worker(database, "w1", 2)
    with database.begin() as session:
        from core.models import Worker

        worker = session.get(Worker, "w1")
        assert worker is not None
        worker.numpy_flops = 1e9
    dry = client.post("/v1/jobs?dry_run=true", json=SEED_SPEC, headers=ALICE).get_json()
    assert abs(dry["cost"]["estimated_seconds"] - dry["cost"]["flops"] / 1e9) < 1e-6


def test_a_job_over_a_limit_is_refused_naming_it(client: FlaskClient) -> None:
    spec = copy.deepcopy(SEED_SPEC)
    spec["dataset"]["params"].update(n_samples=100_000, n_features=500)
    spec["layers"][0]["units"] = 4096
    spec["epochs"] = 5000
    for query in ("?dry_run=true", ""):
        answer = client.post(f"/v1/jobs{query}", json=spec, headers=ALICE)
        assert answer.status_code == 422
        error = answer.get_json()["error"]
        assert error["code"] == "over_limit"
        assert error["details"][0]["field"] == "epochs"
        assert "MAX_JOB_FLOPS" in error["message"] and "times the limit" in error["message"]


def test_a_tenant_over_its_queued_cap_gets_429_and_others_do_not(
    settings: Settings, tmp_path: Path
) -> None:
    queue = RecordingQueue()
    capped = settings.with_overrides(tenant_max_queued=2)
    client = create_app(capped, queue=queue).test_client()
    spec = copy.deepcopy(SEED_SPEC)
    for _ in range(2):
        assert client.post("/v1/jobs", json=spec, headers=ALICE).status_code == 202
    refused = client.post("/v1/jobs", json=spec, headers=ALICE)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    error = refused.get_json()["error"]
    assert error["code"] == "too_many_queued" and "TENANT_MAX_QUEUED=2" in error["message"]
    assert client.post("/v1/jobs", json=spec, headers=BOB).status_code == 202
    assert len(queue.sent) == 3  # no worker registered: sent as they come


def test_the_dashboard_check_shows_the_cost_and_refusals(client: FlaskClient) -> None:
    token = sign_in(client)
    page = submit_form(client, token, SEED_SPEC, action="check").get_data(as_text=True)
    assert 'id="cost"' in page and "no time estimate yet" in page
    spec = copy.deepcopy(SEED_SPEC)
    spec["dataset"]["params"].update(n_samples=1_000_000, n_features=10_000)
    spec["layers"][0]["units"] = 8
    spec["epochs"] = 1
    refused = submit_form(client, token, spec)
    assert refused.status_code == 422
    assert "MAX_DATA_BYTES" in refused.get_data(as_text=True)
