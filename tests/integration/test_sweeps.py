"""Sweeps through HTTP against a real worker and broker (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from core.db import Database
from core.models import Job, Model
from tests.conftest import auth
from tests.integration import harness
from tests.integration.conftest import Stack
from tests.sse import events as parse_events
from tests.support import (
    HALF_SECOND_SPEC,
    TINY_SPEC,
    kill_worker,
)

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


def test_random_search_with_a_median_pruner_prunes_the_hopeless(stack: Stack) -> None:
    body = {
        "name": "pruned",
        "spec": {**SPEC, "epochs": 30, "optimizer": {"type": "sgd"}},
        "space": {"optimizer.learning_rate": {"low": 0.00001, "high": 0.5, "log": True}},
        "strategy": "random",
        "objective": {"metric": "val_loss"},
        "max_trials": 10,
        "max_parallel": 1,
        "pruner": {"type": "median", "n_startup_trials": 3},
        "seed": 3,
    }
    sweep = post_sweep(stack.client, body)
    done = wait_for_sweep(stack.client, sweep["id"])
    assert done["status"] == "succeeded", done
    board = done["leaderboard"]
    pruned = [t for t in board if t["error"] and t["error"]["code"] == "pruned"]
    assert pruned, [(t["status"], t["params"], t["objective"]) for t in board]
    for trial in pruned:
        assert trial["status"] == "cancelled"
        assert trial["error"]["rule"] == "median"
        assert trial["error"]["epoch"] == trial["epochs"] < 30
        assert "median" in trial["error"]["message"]
        job = stack.client.get(f"/v1/jobs/{trial['job_id']}", headers=auth("alice")).get_json()
        assert job["status"] == "cancelled" and job["error"]["code"] == "pruned"
        assert job["error"]["epoch"] == trial["epochs"] and job["model_id"] is None
    succeeded = [t for t in board if t["status"] == "succeeded"]
    assert len(succeeded) >= 3 and all(t["epochs"] == 30 for t in succeeded)
    assert board[: len(succeeded)] == succeeded  # succeeded first, best first
    assert done["best"]["job_id"] == succeeded[0]["job_id"]


def test_cancel_ends_every_trial(stack: Stack) -> None:
    body = {
        "spec": {**SPEC, "epochs": 100_000 // 80},  # ~1.5 s each
        "space": {"seed": {"choices": list(range(8))}},
        "strategy": "grid",
        "max_parallel": 2,
    }
    sweep = post_sweep(stack.client, body)
    deadline = time.monotonic() + 60
    while True:
        now = stack.client.get(f"/v1/sweeps/{sweep['id']}", headers=auth("alice")).get_json()
        if any(t["status"] == "running" for t in now["leaderboard"]):
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    answer = stack.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth("alice"))
    assert answer.status_code == 202 and answer.get_json()["status"] == "cancelled"
    done = wait_for_sweep(stack.client, sweep["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert {t["status"] for t in done["leaderboard"]} == {"cancelled"}
    assert len(done["leaderboard"]) <= 3  # nothing was created after the cancel
    time.sleep(1.5)  # a controller pass later: still nothing new
    again = stack.client.get(f"/v1/sweeps/{sweep['id']}", headers=auth("alice")).get_json()
    assert len(again["leaderboard"]) == len(done["leaderboard"])


def test_another_tenants_job_starts_before_a_100_trial_sweep_ends(
    two_workers: tuple[Any, Database],
) -> None:
    client, database = two_workers
    body = {
        "spec": {**HALF_SECOND_SPEC},
        "space": {"seed": {"choices": list(range(100))}},
        "strategy": "grid",
        "objective": {"metric": "loss"},
        "max_parallel": 8,
    }
    sweep = post_sweep(client, body)
    deadline = time.monotonic() + 120
    while True:  # a's trials hold both workers, and some have finished
        now = client.get(f"/v1/sweeps/{sweep['id']}", headers=auth("alice")).get_json()
        if now["progress"]["finished"] >= 4:
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    lengths = sorted(t["seconds"] for t in now["leaderboard"] if t["status"] == "succeeded")
    length = lengths[len(lengths) // 2]
    b_id = client.post("/v1/jobs", json=HALF_SECOND_SPEC, headers=auth("bob")).get_json()["id"]
    while True:
        with database.session() as session:
            b = session.get(Job, b_id)
            assert b is not None
            if b.started_at is not None:
                break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waited = (b.started_at - b.created_at).total_seconds()
    later = client.get(f"/v1/sweeps/{sweep['id']}", headers=auth("alice")).get_json()
    client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth("alice"))
    print(
        f"\nsweep fairness: B's job started after {waited:.2f} s with A's 100-trial sweep at "
        f"{later['progress']['finished']}/100; one trial takes {length:.2f} s (2 worker slots)"
    )
    assert later["status"] == "running" and later["progress"]["finished"] < 100
    assert waited <= 2 * length + 0.5


def test_a_sweep_survives_a_killed_worker_and_a_restart_of_every_worker(
    tmp_path: Path,
) -> None:
    with ExitStack() as cleanup:
        h = harness.Harness.start(tmp_path, cleanup)
        first = h.start_worker()
        second = h.start_worker()
        body = {
            "spec": {**SPEC, "epochs": 1200},  # about 1.5 s each
            "space": {"seed": {"choices": list(range(6))}},
            "strategy": "grid",
            "objective": {"metric": "loss"},
            "max_parallel": 2,
        }
        sweep = post_sweep(h.client, body)
        deadline = time.monotonic() + 60
        while True:
            now = h.client.get(f"/v1/sweeps/{sweep['id']}", headers=auth("alice")).get_json()
            running = [t for t in now["leaderboard"] if t["status"] == "running"]
            if running and running[0]["epochs"] > 0:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.05)
        kill_worker(first)  # mid-trial, no chance to clean up
        second.stop()  # and the other one goes too
        h.start_worker()
        h.start_worker()
        done = wait_for_sweep(h.client, sweep["id"], timeout=180)
        assert done["status"] == "succeeded", done
        board = done["leaderboard"]
        assert sorted(t["trial"] for t in board) == list(range(6))  # each trial once
        assert {t["status"] for t in board} == {"succeeded"}
        ids = [t["job_id"] for t in board]
        assert set(h.models_per_job(ids).values()) == {1}  # none trained twice to success
        with h.db.session() as session:
            attempts = dict(
                session.execute(select(Job.id, Job.attempts).where(Job.id.in_(ids))).all()
            )
            assert session.scalar(select(func.count()).select_from(Model)) == 6
        assert max(attempts.values()) >= 2  # the killed trial ran again, once to success


def test_the_event_stream_follows_trials_live(stack: Stack) -> None:
    body = {
        "spec": {**SPEC, "epochs": 60},
        "space": {"seed": {"choices": [0, 1, 2]}},
        "strategy": "grid",
        "max_parallel": 1,
    }
    sweep = post_sweep(stack.client, body)
    answer = stack.client.get(f"/v1/sweeps/{sweep['id']}/events", headers=auth("alice"))
    assert answer.status_code == 200 and answer.mimetype == "text/event-stream"
    got = list(parse_events([answer.get_data(as_text=True)]))  # ends when the sweep has
    assert got[0].event == "sweep" and got[0].data["status"] in ("queued", "running")
    assert got[-1].event == "sweep" and got[-1].data["status"] == "succeeded"
    assert got[-1].data["progress"] == {"finished": 3, "total": 3} and got[-1].data["best"]
    trials = {e.data["job_id"]: e.data["trial"] for e in got if e.event == "trial"}
    assert sorted(trials.values()) == [0, 1, 2]
    for job_id in trials:
        states = [
            e.data["status"] for e in got if e.event == "trial" and e.data["job_id"] == job_id
        ]
        assert states[-1] == "succeeded"
        epochs = [e.data["epoch"] for e in got if e.event == "epoch" and e.data["job_id"] == job_id]
        assert epochs == list(range(1, 61))
        ended = next(
            i
            for i, e in enumerate(got)
            if e.event == "trial" and e.data["job_id"] == job_id and e.data["status"] == "succeeded"
        )
        last_epoch = max(
            i for i, e in enumerate(got) if e.event == "epoch" and e.data["job_id"] == job_id
        )
        assert last_epoch < ended  # a trial's end comes after its epochs


def test_controllers_racing_each_other_and_the_workers_create_each_trial_once(
    stack: Stack,
) -> None:
    """Four controllers in this process at once, beside the worker's own (its timer and its
    pool process after each trial): every trial number is taken once, on both databases."""
    import threading

    from worker.sweeps import advance

    body = {
        "spec": SPEC,
        "space": {"seed": {"choices": list(range(12))}},
        "strategy": "grid",
        "max_parallel": 3,
    }
    sweep = post_sweep(stack.client, body)
    stop = threading.Event()

    def control() -> None:
        while not stop.is_set():
            advance(stack.database, sweep["id"])

    threads = [threading.Thread(target=control) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        done = wait_for_sweep(stack.client, sweep["id"])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert done["status"] == "succeeded"
    assert sorted(t["trial"] for t in done["leaderboard"]) == list(range(12))
    with stack.database.session() as session:
        count = session.scalar(
            select(func.count()).select_from(Job).where(Job.sweep_id == sweep["id"])
        )
    assert count == 12
