"""The Keras engine through a real worker: same spec, same contract, same runtime."""

from __future__ import annotations

import copy
import time

import pytest

from tests.conftest import auth
from tests.integration.conftest import Stack, submit
from tests.support import SEED_SPEC, diverging_spec, overfitting_spec, wait_for_job

pytestmark = pytest.mark.integration
ALICE = auth("alice")


def test_seed_job_on_keras_succeeds_and_serves_predictions(stack: Stack) -> None:
    spec = copy.deepcopy(SEED_SPEC)
    spec["engine"] = "keras"
    started = time.monotonic()
    job = submit(stack, spec)
    done = wait_for_job(stack.client, job["id"], ALICE, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["test_accuracy"] >= 0.65
    print(
        f"keras seed job: POST -> succeeded in {time.monotonic() - started:.1f}s, "
        f"test accuracy {done['metrics']['test_accuracy']:.3f}"
    )
    history = stack.client.get(f"/v1/jobs/{job['id']}/metrics", headers=ALICE).get_json()
    assert [r["epoch"] for r in history["history"]] == list(range(1, 51))
    model = stack.client.get(f"/v1/models/{done['model_id']}", headers=ALICE).get_json()
    assert model["engine"] == "keras" and model["params"]["total"] == 4451
    answer = stack.client.post(
        f"/v1/models/{done['model_id']}/predict", json={"instances": [[0.0] * 20]}, headers=ALICE
    )
    assert answer.status_code == 200 and answer.get_json()["predictions"][0] in (0, 1, 2)


def test_cancelling_a_running_keras_job_stops_it_within_an_epoch(stack: Stack) -> None:
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(engine="keras", name="long keras", epochs=2000)
    spec["dataset"]["params"]["n_samples"] = 20_000
    job = submit(stack, spec)
    wait_for_job(
        stack.client, job["id"], ALICE, timeout=120, until=lambda j: j["progress"]["epoch"] >= 1
    )
    epochs = stack.client.get(f"/v1/jobs/{job['id']}/metrics", headers=ALICE).get_json()
    epoch_seconds = max(r["seconds"] for r in epochs["history"])
    asked = time.monotonic()
    assert stack.client.post(f"/v1/jobs/{job['id']}/cancel", headers=ALICE).status_code == 202
    done = wait_for_job(stack.client, job["id"], ALICE, timeout=60)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled" and done["error"]["code"] == "cancelled"
    assert took < 2 * epoch_seconds + 3, (took, epoch_seconds)


def test_a_diverging_keras_job_fails_with_code_diverged(stack: Stack) -> None:
    job = submit(stack, diverging_spec("keras"))
    done = wait_for_job(stack.client, job["id"], ALICE, timeout=120)
    assert done["status"] == "failed" and done["error"]["code"] == "diverged"


@pytest.mark.parametrize("engine", ["numpy", "keras"])
def test_an_early_stopped_job_reports_its_stop_and_best_epoch(stack: Stack, engine: str) -> None:
    job = submit(stack, overfitting_spec(engine))
    done = wait_for_job(stack.client, job["id"], ALICE, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    training = done["training"]
    assert training["stop_reason"] == "early_stopping"
    assert training["stopped_epoch"] == training["best_epoch"] + 3
    assert done["progress"]["epoch"] == training["stopped_epoch"]
    history = stack.client.get(f"/v1/jobs/{job['id']}/metrics", headers=ALICE).get_json()
    best = history["history"][training["best_epoch"] - 1]
    assert done["metrics"]["val_loss"] == pytest.approx(best["val_loss"])
    assert best["val_loss"] == min(r["val_loss"] for r in history["history"])
