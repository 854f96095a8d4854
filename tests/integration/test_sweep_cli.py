"""`trainsvc sweep` and the client's sweep methods over real HTTP, against a real worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import api, api_url, env, trainsvc
from tests.support import TINY_SPEC
from trainsvc_client import ApiError, Client

__all__ = ["api", "api_url", "env"]  # fixtures, shared with the job commands' tests

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = {**TINY_SPEC, "split": {"test_size": 0.2, "validation_split": 0.2}}
OPTIMIZERS = [{"type": "sgd", "learning_rate": 0.05}, {"type": "adam", "learning_rate": 0.01}]


def request(name: str, spec: dict[str, Any], seeds: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "spec": spec,
        "space": {"optimizer": {"choices": OPTIMIZERS}, "seed": {"choices": list(range(seeds))}},
        "strategy": "grid",
        "max_parallel": 2,
    }


def write(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(body))
    return path


def test_sweep_submit_wait_status_list_and_plot(
    env: dict[str, str], api: Client, tmp_path: Path
) -> None:
    path = write(tmp_path, request("cli-sweep", SPEC, seeds=2))
    dry = trainsvc(env, "sweep", "submit", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("grid: 4 trial(s)\n")
    assert "optimizer=adam(learning_rate=0.01) seed=1" in dry.stdout

    result = trainsvc(env, "sweep", "submit", str(path), "--wait")
    assert result.returncode == 0, result.stderr
    sweep_id = result.stderr.split("submitted sweep ", 1)[1].split()[0]
    final_bar = result.stderr.rstrip("\n").split("\r")[-1]
    assert "cli-sweep: 4/4 trials" in final_bar and "best val_loss=" in final_bar
    lines = result.stdout.splitlines()
    assert "status      succeeded" in lines and "progress    4/4 trials" in lines
    board = lines[lines.index(next(x for x in lines if x.split()[:2] == ["#", "job"])) + 1 :]
    assert [row.split()[2] for row in board] == ["succeeded"] * 4
    values = [float(row.split()[3]) for row in board]
    assert values == sorted(values)

    sweep = api.sweep(sweep_id)
    assert [row["job_id"] for row in sweep["leaderboard"]] == [row.split()[1] for row in board]
    listed = trainsvc(env, "sweep", "list", "--limit", "5")
    assert any(line.split()[:4] == [sweep_id, "cli-sweep", "succeeded", "4/4"]
               for line in listed.stdout.splitlines())  # fmt: skip
    status = trainsvc(env, "sweep", "status", sweep_id, "--json")
    assert json.loads(status.stdout)["best"] == sweep["best"]
    plot = trainsvc(env, "sweep", "plot", sweep_id, "-o", str(tmp_path / "sweep.png"))
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_client_follows_a_sweep_and_cancels_one(api: Client) -> None:
    seen: list[int] = []
    sweep = api.submit_sweep(request("client-sweep", SPEC))
    final = api.wait_sweep(
        sweep, on_progress=lambda s: seen.append(s["progress"]["finished"]), timeout=120
    )
    assert final["status"] == "succeeded" and seen[-1] == 2 and seen == sorted(seen)
    events = {event for event, _ in api.sweep_events(sweep["id"])}
    assert {"sweep", "trial", "epoch"} <= events

    long = api.submit_sweep(request("to-cancel", {**SPEC, "epochs": 10_000}))
    cancelled = api.cancel_sweep(long["id"])
    assert cancelled["status"] == "cancelled"
    done = api.wait_sweep(long["id"], timeout=60)
    assert done["status"] == "cancelled"
    with pytest.raises(ApiError) as error:
        api.cancel_sweep(long["id"])
    assert error.value.status == 409
