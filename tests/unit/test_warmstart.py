"""Warm start: `"init": {"model_id": ID}` starts training from a finished model's weights."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from core.datasets import prepare
from core.db import Database
from core.spec import parse_spec
from tests.conftest import auth
from tests.support import TINY_SPEC
from worker.engines.base import Start
from worker.jobs import run_job

ALICE, BOB = auth("alice"), auth("bob")

# Dense layers only, and a learning rate far below float32 resolution: the weights stay as given.
FROZEN: dict[str, Any] = {
    **TINY_SPEC,
    "optimizer": {"type": "sgd", "learning_rate": 1e-30},
    "epochs": 2,
}


def engine_train(engine: str) -> Any:
    if engine == "keras":
        from worker.engines.keras_engine import train
    else:
        from worker.engines.numpy_engine.training import train
    return train


@pytest.mark.parametrize("engine", ["numpy", "keras"])
def test_both_engines_start_from_the_given_weights(engine: str) -> None:
    spec = parse_spec({**FROZEN, "engine": engine, "seed": 7})
    data = prepare(spec)
    rng = np.random.default_rng(1)
    init = {
        "layers.0.kernel": rng.normal(size=(2, 4)).astype(np.float32),
        "layers.0.bias": rng.normal(size=4).astype(np.float32),
        "layers.1.kernel": rng.normal(size=(4, 2)).astype(np.float32),
        "layers.1.bias": rng.normal(size=2).astype(np.float32),
    }
    train = engine_train(engine)
    result = train(spec, data, lambda record: None, start=Start(init=init))
    for name, value in init.items():
        np.testing.assert_array_equal(result.arrays[name], value, err_msg=name)
    fresh = train(spec, data, lambda record: None)
    assert not np.array_equal(fresh.arrays["layers.0.kernel"], init["layers.0.kernel"])


def submit(client: FlaskClient, spec: dict[str, Any], headers: dict[str, str] = ALICE) -> Any:
    return client.post("/v1/jobs", json=spec, headers=headers)


def trained(client: FlaskClient, database: Database, spec: dict[str, Any]) -> dict[str, Any]:
    job = submit(client, spec).get_json()
    assert run_job(database, job["id"]) == "succeeded"
    done: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json()
    return done


def first_loss(client: FlaskClient, job_id: str) -> float:
    history = client.get(f"/v1/jobs/{job_id}/metrics", headers=ALICE).get_json()["history"]
    return float(history[0]["loss"])


def test_a_job_warm_started_from_a_model_begins_where_it_ended(
    client: FlaskClient, database: Database
) -> None:
    base = {**TINY_SPEC, "epochs": 60, "optimizer": {"type": "adam", "learning_rate": 0.05}}
    first = trained(client, database, base)
    init = {"model_id": first["model_id"]}
    again = trained(client, database, {**base, "epochs": 5, "init": init})
    assert again["spec"]["init"] == {"model_id": first["model_id"]}
    assert again["resumed_from_epoch"] is None
    # It starts trained: its first epoch's loss is near the model's last, far below a fresh start.
    assert first_loss(client, again["id"]) < 0.5 * first_loss(client, first["id"])


def test_a_different_architecture_is_a_422_naming_the_first_layer_that_differs(
    client: FlaskClient, database: Database
) -> None:
    model_id = trained(client, database, {**TINY_SPEC, "epochs": 2})["model_id"]
    wider = copy.deepcopy(TINY_SPEC)
    wider["layers"][0]["units"] = 8
    wider["init"] = {"model_id": model_id}
    response = submit(client, wider)
    assert response.status_code == 422
    ((detail,),) = [response.get_json()["error"]["details"]]
    assert detail["field"] == "layers[0]"
    assert "output width 8" in detail["message"] and "output width 4" in detail["message"]
    deeper = copy.deepcopy(TINY_SPEC)
    deeper["layers"].insert(1, {"type": "dense", "units": 4, "activation": "relu"})
    deeper["init"] = {"model_id": model_id}
    details = submit(client, deeper).get_json()["error"]["details"]
    assert [d["field"] for d in details] == ["layers[1]"]
    other_data = copy.deepcopy(TINY_SPEC)
    other_data["dataset"] = {"builtin": "make_classification", "params": {"n_features": 5}}
    other_data["init"] = {"model_id": model_id}
    details = submit(client, other_data).get_json()["error"]["details"]
    assert details[0]["field"] == "layers[0]" and "features" in details[0]["message"]


def test_an_unknown_or_another_tenant_s_model_is_a_422_like_an_unknown_dataset(
    client: FlaskClient, database: Database
) -> None:
    model_id = trained(client, database, {**TINY_SPEC, "epochs": 2})["model_id"]
    for spec, headers in (
        ({**TINY_SPEC, "init": {"model_id": "no-such-model"}}, ALICE),
        ({**TINY_SPEC, "init": {"model_id": model_id}}, BOB),
    ):
        response = submit(client, spec, headers)
        assert response.status_code == 422
        error = response.get_json()["error"]
        assert error["code"] == "invalid_spec"
        assert error["details"][0]["field"].startswith("init")
        assert "no model with id" in error["details"][0]["message"]
    assert submit(client, {**TINY_SPEC, "init": {"model_id": model_id}}).status_code == 202
