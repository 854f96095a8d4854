"""The spine through a real worker process: train, record, predict, cancel, fail with a reason."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from core.datasets import prepare
from core.models import Job, Model
from core.spec import parse_spec
from tests.conftest import auth
from tests.integration.conftest import Stack, submit
from tests.support import SEED_SPEC, diverging_spec, raw_features, wait_for_job, wait_for_log
from worker.engines.numpy_engine.network import Network
from worker.engines.numpy_engine.optimizers import make_optimizer
from worker.engines.numpy_engine.training import fit

pytestmark = pytest.mark.integration
ALICE = auth("alice")


def long_spec(name: str) -> dict[str, Any]:
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(name=name, epochs=2000)
    spec["dataset"]["params"]["n_samples"] = 20_000
    return spec


def test_seed_job_trains_and_serves_the_engines_own_predictions(stack: Stack) -> None:
    started = time.monotonic()
    job = submit(stack, SEED_SPEC)
    done = wait_for_job(stack.client, job["id"], ALICE)
    elapsed = time.monotonic() - started
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["error"] is None
    assert done["metrics"]["test_accuracy"] >= 0.65
    assert done["progress"] == {"epoch": 50, "epochs": 50}
    print(
        f"seed job: POST -> succeeded in {elapsed:.2f}s, "
        f"test accuracy {done['metrics']['test_accuracy']:.3f}"
    )

    history = stack.client.get(f"/v1/jobs/{job['id']}/metrics", headers=ALICE).get_json()
    assert history["job_id"] == job["id"]
    assert [row["epoch"] for row in history["history"]] == list(range(1, 51))
    assert all(row["seconds"] > 0 and "val_accuracy" in row for row in history["history"])

    # The same spec and seed, trained here, must give the model the worker stored.
    spec = parse_spec(SEED_SPEC)
    data = prepare(spec)
    rng = np.random.default_rng(spec.seed)
    net = Network.from_spec(spec.layers, data.n_features, spec.loss, rng)
    fit(
        net,
        make_optimizer(spec.optimizer, net.flat_params, net.flat_grads),
        data,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        rng=rng,
        on_epoch_end=lambda r: None,
    )
    assert data.scaler_mean is not None and data.scaler_scale is not None
    raw_rows = raw_features(data, data.X_test)
    response = stack.client.post(
        f"/v1/models/{done['model_id']}/predict",
        json={"instances": raw_rows.tolist()},
        headers=ALICE,
    )
    assert response.status_code == 200
    body = response.get_json()
    expected = net.predict(data.X_test)
    np.testing.assert_allclose(body["probabilities"], expected, atol=1e-5)
    assert body["predictions"] == [data.classes[i] for i in expected.argmax(axis=1)]

    # A duplicate message for a finished job does nothing: still one attempt, one model.
    stack.client.application.extensions["trainsvc.queue"].enqueue(job["id"])
    wait_for_log(stack.worker, f"job {job['id']} is not queued any more")
    again = stack.client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()
    assert again["status"] == "succeeded" and again["attempts"] == 1
    with stack.database.begin() as session:
        count = session.scalar(select(func.count()).where(Model.job_id == job["id"]))
    assert count == 1


def test_cancel_a_queued_and_a_running_job(stack: Stack) -> None:
    running = submit(stack, long_spec("long"))
    wait_for_job(stack.client, running["id"], ALICE, until=lambda j: j["progress"]["epoch"] >= 1)
    queued = submit(stack, long_spec("waiting"))  # one worker slot, busy: this one waits

    response = stack.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=ALICE)
    assert response.status_code == 202
    assert response.get_json()["status"] == "cancelled"

    response = stack.client.post(f"/v1/jobs/{running['id']}/cancel", headers=ALICE)
    assert response.status_code == 202
    asked = time.monotonic()
    done = wait_for_job(stack.client, running["id"], ALICE, timeout=30)
    assert done["status"] == "cancelled" and done["error"]["code"] == "cancelled"
    assert time.monotonic() - asked < 10
    assert done["model_id"] is None and done["finished_at"] is not None
    epochs = stack.client.get(f"/v1/jobs/{running['id']}/metrics", headers=ALICE).get_json()
    assert len(epochs["history"]) == done["progress"]["epoch"] >= 1

    # The cancelled job waited in the database for a free slot: it is never sent, even once the
    # slot is free (a few dispatcher passes later), and never claimed.
    time.sleep(3 * stack.settings.dispatch_interval_seconds)
    with stack.database.session() as session:
        waited = session.get(Job, queued["id"])
        assert waited is not None and waited.enqueued_at is None
    assert queued["id"] not in stack.worker.log_path.read_text()
    after = stack.client.get(f"/v1/jobs/{queued['id']}", headers=ALICE).get_json()
    assert after["status"] == "cancelled" and after["attempts"] == 0
    again = stack.client.post(f"/v1/jobs/{running['id']}/cancel", headers=ALICE)
    assert again.status_code == 409


def test_a_diverging_job_fails_with_code_diverged(stack: Stack) -> None:
    job = submit(stack, diverging_spec("numpy"))
    done = wait_for_job(stack.client, job["id"], ALICE)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "diverged" and "learning rate" in done["error"]["message"]
    assert done["model_id"] is None and done["finished_at"] is not None
    assert all(v is None or np.isfinite(v) for v in done["metrics"].values())


def test_readiness_sees_the_real_broker_and_database(stack: Stack) -> None:
    response = stack.client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    ("engine", "delays"),
    [("numpy", [0.0, 0.1, 0.2, 0.3, 0.5, 0.8]), ("keras", [0.0, 1.0, 2.0, 3.0, 4.0, 6.0])],
)
def test_cancel_racing_completion_leaves_a_consistent_state(
    stack: Stack, engine: str, delays: list[float]
) -> None:
    """A 202 to cancel always ends `cancelled`; a 409 only ever meets a finished job."""
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(engine=engine, epochs=3)
    spec["dataset"]["params"]["n_samples"] = 300
    outcomes = []
    for delay in delays:
        job = submit(stack, spec)
        time.sleep(delay)
        answer = stack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE)
        final = wait_for_job(stack.client, job["id"], ALICE, timeout=120)
        outcomes.append((answer.status_code, final["status"]))
        if answer.status_code == 202:
            assert final["status"] == "cancelled", (delay, final)
            assert final["model_id"] is None
        else:
            assert answer.status_code == 409 and final["status"] == "succeeded", (delay, final)
        with stack.database.begin() as session:
            models = session.scalar(select(func.count()).where(Model.job_id == job["id"]))
        assert models == (1 if final["status"] == "succeeded" else 0)
    assert {status for _, status in outcomes} <= {"cancelled", "succeeded"}
