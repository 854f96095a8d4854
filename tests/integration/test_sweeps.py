"""Sweeps through HTTP against a real worker and broker (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import auth
from tests.integration.conftest import Stack
from tests.support import TINY_SPEC

pytestmark = pytest.mark.integration

TERMINAL = ("succeeded", "failed", "cancelled")
SPEC: dict[str, Any] = {**TINY_SPEC, "split": {"test_size": 0.2, "validation_split": 0.2}}


def post_sweep(client: FlaskClient, body: dict[str, Any], tenant: str = "alice") -> dict[str, Any]:
    response = client.post("/v1/sweeps", json=body, headers=auth(tenant))
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"].endswith(response.get_json()["id"])
    sweep: dict[str, Any] = response.get_json()
    return sweep


def wait_for_sweep(
    client: FlaskClient, sweep_id: str, timeout: float = 120, tenant: str = "alice"
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        sweep: dict[str, Any] = client.get(
            f"/v1/sweeps/{sweep_id}", headers=auth(tenant)
        ).get_json()
        if sweep["status"] in TERMINAL and all(
            t["status"] in TERMINAL for t in sweep["leaderboard"]
        ):
            return sweep
        assert time.monotonic() < deadline, f"sweep still {sweep['status']}: {sweep['progress']}"
        time.sleep(0.1)


def test_a_grid_sweep_succeeds_with_a_sorted_leaderboard(stack: Stack) -> None:
    body = {
        "name": "grid",
        "spec": SPEC,
        "space": {
            "optimizer": {
                "choices": [
                    {"type": "sgd", "learning_rate": 0.01},
                    {"type": "adam", "learning_rate": 0.01},
                ]
            },
            "seed": {"choices": [0, 1]},
        },
        "strategy": "grid",
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "max_parallel": 2,
    }
    sweep = post_sweep(stack.client, body)
    assert sweep["status"] == "queued"
    assert sweep["progress"] == {"finished": 0, "total": 4}
    assert sweep["best"] is None
    done = wait_for_sweep(stack.client, sweep["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"finished": 4, "total": 4}
    board = done["leaderboard"]
    assert [t["status"] for t in board] == ["succeeded"] * 4
    values = [t["objective"] for t in board]
    assert values == sorted(values)
    assert sorted(t["trial"] for t in board) == [0, 1, 2, 3]
    assert {(t["params"]["optimizer"]["type"], t["params"]["seed"]) for t in board} == {
        ("sgd", 0),
        ("sgd", 1),
        ("adam", 0),
        ("adam", 1),
    }
    best = done["best"]
    assert best["job_id"] == board[0]["job_id"] and best["value"] == values[0]
    assert best["model_id"] and best["params"] == board[0]["params"]
    for row in board:
        assert row["epochs"] == 20 and row["seconds"] is not None
        assert row["metrics"]["val_loss"] == row["objective"]
    # The trials are ordinary jobs, tagged with the sweep.
    job = stack.client.get(f"/v1/jobs/{best['job_id']}", headers=auth("alice")).get_json()
    assert job["status"] == "succeeded" and job["model_id"] == best["model_id"]
    assert job["sweep"] == {
        "sweep_id": sweep["id"],
        "trial": board[0]["trial"],
        "params": best["params"],
    }
    assert job["spec"]["optimizer"]["type"] == best["params"]["optimizer"]["type"]
    listed = stack.client.get("/v1/sweeps", headers=auth("alice")).get_json()
    assert sweep["id"] in [s["id"] for s in listed["items"]]
    assert "leaderboard" not in listed["items"][0]
    # Another tenant sees none of it.
    assert stack.client.get(f"/v1/sweeps/{sweep['id']}", headers=auth("bob")).status_code == 404
    png = stack.client.get(f"/v1/sweeps/{sweep['id']}/plot.png", headers=auth("alice"))
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")
