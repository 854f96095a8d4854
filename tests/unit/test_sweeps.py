"""Sweeps without a worker: the search space, every trial's validation, the 422s, the
controller's steps (grid order, max_parallel, no trial twice) and the pruner's decision."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from core.db import Database
from core.models import Job, Sweep
from core.sweep_spec import MAX_TRIALS, SweepError, parse_path, plan_sweep
from tests.conftest import auth
from tests.support import SEED_SPEC
from worker.jobs import run_job
from worker.sweeps import advance

ALICE = auth("alice")
OPTIMIZERS = [
    {"type": "sgd", "learning_rate": 0.01},
    {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9},
    {"type": "rmsprop", "learning_rate": 0.001},
    {"type": "adam", "learning_rate": 0.001},
]


def body(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SEED_SPEC)
    spec["epochs"] = 2
    sweep = {
        "name": "compare-optimizers",
        "spec": spec,
        "space": {"optimizer": {"choices": OPTIMIZERS}, "seed": {"choices": [0, 1, 2]}},
        "strategy": "grid",
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "max_parallel": 2,
    }
    sweep.update(changes)
    return sweep


def test_field_paths_parse_to_parts() -> None:
    assert parse_path("optimizer.learning_rate").parts == ("optimizer", "learning_rate")
    assert parse_path("layers[0].units").parts == ("layers", 0, "units")
    assert parse_path("batch_size").parts == ("batch_size",)
    for bad in ("", "[0]", "layers[x]", "a..b", "layers[0]units", "a b"):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_a_grid_is_every_combination_first_path_slowest() -> None:
    plan = plan_sweep(body())
    assert plan.total == 12
    trials = [params for params, _ in plan.checked]
    assert trials[0] == {"optimizer": OPTIMIZERS[0], "seed": 0}
    assert trials[1] == {"optimizer": OPTIMIZERS[0], "seed": 1}
    assert trials[-1] == {"optimizer": OPTIMIZERS[3], "seed": 2}
    for params, spec in plan.checked:
        assert spec.seed == params["seed"]
        assert spec.optimizer.type == params["optimizer"]["type"]


def test_a_whole_object_then_a_field_of_it() -> None:
    space = {
        "optimizer": {"choices": [{"type": "sgd"}, {"type": "adam"}]},
        "optimizer.learning_rate": {"low": 0.0001, "high": 0.1, "log": True},
        "layers[0].units": {"low": 8, "high": 128, "type": "int"},
        "layers[2].rate": {"choices": [0.1, 0.5]},
    }
    plan = plan_sweep(body(space=space, strategy="random", max_trials=12))
    assert plan.total == 12
    rates = {spec.optimizer.learning_rate for _, spec in plan.checked}
    assert {0.0001, 0.1} <= rates
    units = {spec.model_dump()["layers"][0]["units"] for _, spec in plan.checked}
    assert units >= {8, 128}
    assert plan.largest.model_dump()["layers"][0]["units"] == 128


def test_optimizer_fields_known_through_chosen_objects() -> None:
    space = {
        "optimizer": {"choices": [{"type": "sgd"}]},
        "optimizer.momentum": {"choices": [0.0, 0.9]},
    }
    assert plan_sweep(body(space=space)).total == 2


def problem(sweep: dict[str, Any]) -> SweepError:
    with pytest.raises(SweepError) as caught:
        plan_sweep(sweep)
    return caught.value


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"space": {"layers[0].size": {"choices": [1]}}}, "space.layers[0].size", "unknown"),
        ({"space": {"layers[12].units": {"choices": [1]}}}, "space.layers[12].units", "unknown"),
        ({"space": {"nope": {"low": 1, "high": 2}}}, "space.nope", "unknown"),
        ({"space": {"seed": {"choices": []}}}, "space.seed.choices", "at least 1"),
        (
            {"space": {"optimizer.learning_rate": {"low": 0.1, "high": 0.01}}},
            "space.optimizer.learning_rate",
            "above high",
        ),
        (
            {"space": {"optimizer.learning_rate": {"low": 0, "high": 0.1, "log": True}}},
            "space.optimizer.learning_rate",
            "low > 0",
        ),
        ({"space": {"batch_size": {"low": 8, "high": 64}}}, "space.batch_size", "grid"),
        ({"space": {"seed": {"choices": list(range(20))}}, "max_trials": 10}, "max_trials", "20"),
        ({"strategy": "random", "max_trials": MAX_TRIALS + 1}, "max_trials", "1,000"),
        (
            {
                "space": {
                    "seed": {"choices": list(range(40))},
                    "epochs": {"choices": list(range(1, 31))},
                }
            },
            "space",
            "1,000",
        ),
        ({"objective": {"metric": "val_f1"}}, "objective.metric", "Input should be"),
        ({"strategy": "bayes"}, "strategy", "Input should be"),
        ({"max_parallel": 0}, "max_parallel", "greater than"),
        ({"pruner": "asha"}, "pruner.type", "hyperband"),
        ({"pruner": "median", "objective": {"metric": "test_loss"}}, "pruner", "epochs"),
    ],
)
def test_bad_sweeps_name_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    error = problem(body(**changes))
    assert error.details[0]["field"] == field, error.details
    assert words in str(error) or words in error.details[0]["message"], error.details


def test_a_space_that_breaks_the_output_width_names_the_trial() -> None:
    error = problem(body(space={"layers[9].units": {"choices": [3, 4]}}))
    detail = error.details[0]
    assert detail["field"] == "spec.layers[9].units"
    assert detail["params"] == {"layers[9].units": 4}
    assert "3 output unit(s)" in detail["message"]
    # random and tpe check every choice and each range's ends too
    error = problem(
        body(strategy="random", space={"layers[9].units": {"low": 2, "high": 3, "type": "int"}})
    )
    assert error.details[0]["params"] == {"layers[9].units": 2}


def test_the_api_answers_422_with_the_trials_values(client: FlaskClient) -> None:
    answer = client.post(
        "/v1/sweeps", json=body(space={"layers[9].units": {"choices": [3, 5]}}), headers=ALICE
    )
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_sweep"
    assert error["details"][0]["params"] == {"layers[9].units": 5}
    assert "layers[9].units" in error["message"] and "5" in error["message"]
    answer = client.post("/v1/sweeps", json=[1], headers=ALICE)
    assert answer.status_code == 422


def test_dry_run_lists_the_trials_or_the_space(client: FlaskClient, database: Database) -> None:
    grid = client.post("/v1/sweeps?dry_run=true", json=body(), headers=ALICE).get_json()
    assert grid["total"] == 12 and len(grid["trials"]) == 12 and "space" not in grid
    assert grid["largest"]["total_params"] == 4451
    one = client.post("/v1/jobs?dry_run=true", json=body()["spec"], headers=ALICE).get_json()
    assert grid["cost"]["flops"] == pytest.approx(12 * one["cost"]["flops"], rel=0.01)
    space = {"layers[0].units": {"low": 8, "high": 128, "type": "int"}}
    rand = client.post(
        "/v1/sweeps?dry_run=true",
        json=body(strategy="tpe", space=space, max_trials=30),
        headers=ALICE,
    ).get_json()
    assert rand["total"] == 30 and "trials" not in rand
    assert rand["space"]["layers[0].units"]["high"] == 128
    assert rand["largest"]["params"] == {"layers[0].units": 128}
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Sweep)) == 0


def test_the_sweeps_total_cost_is_admitted_as_one_jobs(client: FlaskClient, app: Any) -> None:
    one = client.post("/v1/jobs?dry_run=true", json=body()["spec"], headers=ALICE).get_json()
    settings = app.config["TRAINSVC_SETTINGS"]
    limit = one["cost"]["flops"] * 5  # one trial fits; twelve do not
    app.config["TRAINSVC_SETTINGS"] = settings.with_overrides(max_job_flops=limit)
    assert client.post("/v1/jobs", json=body()["spec"], headers=ALICE).status_code == 202
    answer = client.post("/v1/sweeps", json=body(), headers=ALICE)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["code"] == "over_limit"
    assert "12 trials" in answer.get_json()["error"]["message"]


def trials(database: Database, sweep_id: str) -> list[Job]:
    with database.session() as session:
        return list(
            session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial))
        )


def test_the_controller_keeps_max_parallel_and_ends_the_sweep(
    client: FlaskClient, database: Database
) -> None:
    sweep = client.post("/v1/sweeps", json=body(), headers=ALICE).get_json()
    first = advance(database, sweep["id"])
    assert len(first) == 2  # max_parallel
    assert advance(database, sweep["id"]) == []  # two unfinished: nothing more
    assert run_job(database, first[0]) == "succeeded"
    assert len(advance(database, sweep["id"])) == 1
    created = trials(database, sweep["id"])
    assert [t.trial for t in created] == [0, 1, 2]
    assert [t.params for t in created] == [
        {"optimizer": OPTIMIZERS[0], "seed": 0},
        {"optimizer": OPTIMIZERS[0], "seed": 1},
        {"optimizer": OPTIMIZERS[0], "seed": 2},
    ]
    while pending := [t.id for t in trials(database, sweep["id"]) if t.status == "queued"]:
        for job_id in pending:
            run_job(database, job_id)
        advance(database, sweep["id"])
    done = client.get(f"/v1/sweeps/{sweep['id']}", headers=ALICE).get_json()
    assert done["status"] == "succeeded" and done["progress"] == {"finished": 12, "total": 12}
    assert done["best"]["value"] == done["leaderboard"][0]["objective"]
    assert done["started_at"] and done["finished_at"]


def test_two_controllers_at_once_create_each_trial_once(
    client: FlaskClient, database: Database
) -> None:
    sweep = client.post("/v1/sweeps", json=body(max_parallel=12), headers=ALICE).get_json()
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def control() -> None:
        barrier.wait()
        results.append(advance(database, sweep["id"]))

    threads = [threading.Thread(target=control) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = trials(database, sweep["id"])
    assert sorted(t.trial or 0 for t in created) == list(range(12))
    assert sum(len(r) for r in results) == 12  # the others created nothing


def test_random_and_tpe_are_seeded(client: FlaskClient, database: Database) -> None:
    space = {
        "optimizer.learning_rate": {"low": 0.0001, "high": 0.1, "log": True},
        "layers[0].units": {"low": 8, "high": 64, "type": "int"},
    }
    chosen = []
    for strategy in ("random", "random", "tpe"):
        sweep = client.post(
            "/v1/sweeps",
            json=body(strategy=strategy, space=space, max_trials=4, max_parallel=4, seed=7),
            headers=ALICE,
        ).get_json()
        advance(database, sweep["id"])
        chosen.append([t.params for t in trials(database, sweep["id"])])
    assert chosen[0] == chosen[1]
    assert len({str(p) for p in chosen[0]}) == 4
    for params in chosen[0]:
        assert params is not None
        assert 0.0001 <= params["optimizer.learning_rate"] <= 0.1
        assert isinstance(params["layers[0].units"], int) and 8 <= params["layers[0].units"] <= 64


def test_cancel_ends_queued_trials_and_refuses_a_finished_sweep(
    client: FlaskClient, database: Database
) -> None:
    sweep = client.post("/v1/sweeps", json=body(), headers=ALICE).get_json()
    advance(database, sweep["id"])
    answer = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=ALICE)
    assert answer.status_code == 202 and answer.get_json()["status"] == "cancelled"
    assert {t.status for t in trials(database, sweep["id"])} == {"cancelled"}
    assert advance(database, sweep["id"]) == []
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=ALICE).status_code == 409
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth("bob")).status_code == 404


@pytest.mark.parametrize(
    ("pruner", "rule"),
    [
        ({"type": "median", "n_startup_trials": 2}, "median"),
        (
            {"type": "successive_halving", "min_resource": 1, "reduction_factor": 3},
            "successive_halving",
        ),
        ({"type": "hyperband", "min_resource": 1, "reduction_factor": 3}, "hyperband"),
    ],
)
def test_the_pruner_stops_hopeless_trials_after_an_epoch(
    client: FlaskClient, database: Database, pruner: dict[str, Any], rule: str
) -> None:
    spec = body()["spec"]
    spec.update(epochs=9, optimizer={"type": "sgd"})
    sweep = client.post(
        "/v1/sweeps",
        json=body(
            spec=spec,
            strategy="random",
            space={"optimizer.learning_rate": {"low": 0.00001, "high": 0.3, "log": True}},
            max_trials=9,
            max_parallel=1,
            pruner=pruner,
            seed=5,
        ),
        headers=ALICE,
    ).get_json()
    while pending := advance(database, sweep["id"]):
        for job_id in pending:
            run_job(database, job_id)
    advance(database, sweep["id"])
    done = client.get(f"/v1/sweeps/{sweep['id']}", headers=ALICE).get_json()
    assert done["status"] == "succeeded"
    pruned = [t for t in done["leaderboard"] if t["error"] and t["error"]["code"] == "pruned"]
    assert pruned
    for trial in pruned:
        assert trial["status"] == "cancelled" and trial["error"]["rule"] == rule
        assert trial["epochs"] == trial["error"]["epoch"] < 9
        assert trial["model_id"] is None
    kept = [t for t in done["leaderboard"] if t["status"] == "succeeded"]
    assert kept and all(t["epochs"] == 9 for t in kept)
    # the pruned ones were the worse: none beats the best that ran to the end at its epoch
    assert done["best"]["job_id"] == kept[0]["job_id"]
