"""Sweeps from the client and the `trainsvc sweep` command, against a fake server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_service import (
    FakeService,
    Request,
    Response,
    error_response,
    json_response,
    sse,
)
from tests.unit.test_cli import run
from trainsvc_client import Client, WaitTimeout, sweep_cli
from trainsvc_client.sweep_cli import params_text

ROOT = Path(__file__).resolve().parents[2]
SGD = {"type": "sgd", "learning_rate": 0.01}
MOMENTUM = {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9}
ADAM = {"type": "adam", "learning_rate": 0.001}


def trial(job_id: str, status: str, optimizer: dict[str, Any], value: float | None) -> Json:
    return {
        "job_id": job_id,
        "status": status,
        "params": {"optimizer": optimizer, "seed": 0},
        "objective": value,
        "metrics": {"val_loss": value, "val_accuracy": 0.8} if value is not None else {},
        "epochs": 50 if value is not None else 0,
        "seconds": 0.42 if value is not None else None,
    }


Json = dict[str, Any]


def sweep(status: str = "running", finished: int = 1, total: int = 3, **fields: Any) -> Json:
    """A sweep object shaped like the service's."""
    board = [trial("j2", "succeeded", ADAM, 0.4321)]
    if finished >= 2:
        board.append(trial("j1", "succeeded", SGD, 0.9))
    if finished >= 3:
        pruned = {"code": "pruned", "message": "below the median", "epoch": 5, "rule": "median"}
        board.append({**trial("j3", "cancelled", MOMENTUM, 0.95), "error": pruned})
    board += [trial(f"j{i}", "queued", SGD, None) for i in range(finished + 1, total + 1)]
    value: Json = {
        "id": "s1",
        "name": "compare-optimizers",
        "status": status,
        "progress": {"finished": finished, "total": total},
        "best": {"job_id": "j2", "model_id": "m2", "value": 0.4321, "params": board[0]["params"]},
        "leaderboard": board,
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "created_at": "2025-01-02T03:04:05.123456Z",
    }
    value.update(fields)
    return value


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeService]:
    fake = FakeService().start()
    monkeypatch.setenv("TRAINSVC_URL", fake.url)
    monkeypatch.setenv("TRAINSVC_API_KEY", "env-key")
    monkeypatch.chdir(tmp_path)
    yield fake
    fake.stop()


@pytest.fixture
def client(service: FakeService) -> Client:
    return Client(service.url, "secret-key", timeout=5)


@pytest.fixture
def request_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.json"
    path.write_text((ROOT / "examples" / "compare_optimizers.json").read_text())
    return path


def sequence(*sweeps: Json) -> Any:
    """A handler answering each GET with the next sweep, then the last one forever."""
    answers = list(sweeps)
    lock = threading.Lock()

    def handler(_request: Request) -> Response:
        with lock:
            value = answers.pop(0) if len(answers) > 1 else answers[0]
        return json_response(value)

    return handler


# -- client -----------------------------------------------------------------------------------


def test_client_sends_each_sweep_request(service: FakeService, client: Client) -> None:
    service.route("POST", "/v1/sweeps", json_response(sweep("queued", 0), 202))
    service.route("GET", "/v1/sweeps/s%2F1", json_response(sweep()))
    service.route("GET", "/v1/sweeps", json_response({"items": [sweep()], "next_cursor": None}))
    service.route("POST", "/v1/sweeps/s1/cancel", json_response(sweep("cancelled"), 202))
    png = b"\x89PNG\r\n\x1a\nsweep"
    service.route(
        "GET", "/v1/sweeps/s1/plot.png", Response(200, png, {"Content-Type": "image/png"})
    )
    body = {"name": "x", "spec": {}, "space": {"seed": {"choices": [0, 1]}}}
    assert client.submit_sweep(body, idempotency_key="k1")["status"] == "queued"
    client.submit_sweep(body, dry_run=True)
    assert client.sweep("s/1")["id"] == "s1"
    assert [s["id"] for s in client.iter_sweeps(status="running")] == ["s1"]
    assert client.cancel_sweep("s1")["status"] == "cancelled"
    assert client.sweep_plot("s1") == png
    posts = service.sent("POST", "/v1/sweeps")
    assert [p.json() for p in posts] == [body, body]
    assert [p.query for p in posts] == [{}, {"dry_run": "true"}]
    assert posts[0].headers["Idempotency-Key"] == "k1" and "Idempotency-Key" not in posts[1].headers
    assert posts[0].headers["Authorization"] == "Bearer secret-key"
    assert service.sent("GET", "/v1/sweeps")[0].query == {"status": "running", "limit": "100"}
    assert service.sent("GET", "/v1/sweeps/s1/plot.png")[0].headers["Accept"] == "image/png"


def test_sweep_events_are_decoded(service: FakeService, client: Client) -> None:
    service.route(
        "GET",
        "/v1/sweeps/s1/events",
        sse(
            ("trial", {"job_id": "j1", "status": "running"}, None),
            ": keepalive\n\n",
            ("epoch", {"job_id": "j1", "epoch": 1, "val_loss": 0.5}, 1),
        ),
    )
    assert list(client.sweep_events("s1")) == [
        ("trial", {"job_id": "j1", "status": "running"}),
        ("epoch", {"job_id": "j1", "epoch": 1, "val_loss": 0.5}),
    ]
    assert service.sent("GET", "/v1/sweeps/s1/events")[0].headers["Accept"] == "text/event-stream"


def test_wait_sweep_follows_the_sweep_events_and_returns_the_leaderboard(
    service: FakeService, client: Client
) -> None:
    def brief(value: Json) -> Json:
        return {k: v for k, v in value.items() if k != "leaderboard"}

    events: list[tuple[str, Any, int | None] | str] = [("sweep", brief(sweep("queued", 0)), None)]
    for i in (1, 2):
        events += [
            ("trial", {"job_id": f"j{i}", "status": "running"}, None),
            ("epoch", {"job_id": f"j{i}", "epoch": 1, "val_loss": 0.5}, None),
            ": keepalive\n\n",
            ("sweep", brief(sweep(finished=i)), None),
        ]
    service.route("GET", "/v1/sweeps/s1/events", sse(*events))  # ends before the sweep does
    done = sse(("sweep", brief(sweep("succeeded", 3)), None), ("trial", {"job_id": "j9"}, None))
    service.route("GET", "/v1/sweeps/s1", sequence(sweep(finished=2), sweep("succeeded", 3)))
    seen: list[tuple[str, int]] = []

    def progress(value: Json) -> None:
        seen.append((value["status"], value["progress"]["finished"]))
        if value["progress"]["finished"] == 2:
            service.route("GET", "/v1/sweeps/s1/events", done)

    final = client.wait_sweep("s1", on_progress=progress, poll_interval=0.01)
    assert final["status"] == "succeeded" and len(final["leaderboard"]) == 3
    assert seen == [("queued", 0), ("running", 1), ("running", 2), ("succeeded", 3)]
    # The stream that ended early was read again once the sweep had been read in between.
    assert len(service.sent("GET", "/v1/sweeps/s1/events")) == 2
    assert len(service.sent("GET", "/v1/sweeps/s1")) == 2


def test_wait_sweep_polls_when_there_is_no_stream(service: FakeService, client: Client) -> None:
    service.route(
        "GET", "/v1/sweeps/s1", sequence(sweep(finished=1), sweep(finished=1), sweep("failed", 3))
    )
    service.route("GET", "/v1/sweeps/s1/events", error_response(503, "unavailable", "busy"))
    seen: list[int] = []
    final = client.wait_sweep(
        "s1", on_progress=lambda s: seen.append(s["progress"]["finished"]), poll_interval=0.01
    )
    assert final["status"] == "failed"
    assert seen == [1, 3]  # told only when the sweep changed
    assert len(service.sent("GET", "/v1/sweeps/s1")) == 3


def test_wait_sweep_gives_up_after_its_timeout(service: FakeService, client: Client) -> None:
    service.route("GET", "/v1/sweeps/s1", json_response(sweep()))
    service.route("GET", "/v1/sweeps/s1/events", error_response(404, "not_found", "no stream"))
    with pytest.raises(WaitTimeout, match=r"sweep s1 did not finish within 0\.2 s"):
        client.wait_sweep("s1", timeout=0.2, poll_interval=0.02)


# -- the command ------------------------------------------------------------------------------


def test_sweep_submit_wait_shows_one_bar_and_the_leaderboard(
    service: FakeService,
    capsys: pytest.CaptureFixture[str],
    request_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service.route("POST", "/v1/sweeps", json_response(sweep("queued", 0), 202))
    service.route(
        "GET",
        "/v1/sweeps/s1",
        sequence(sweep("queued", 0), sweep(finished=1), sweep(finished=2), sweep("succeeded", 3)),
    )
    service.route("GET", "/v1/sweeps/s1/events", error_response(404, "not_found", "none"))
    monkeypatch.setattr(sweep_cli, "POLL_SECONDS", 0.01)
    code, out, err = run(capsys, "sweep", "submit", str(request_file), "--wait", "--timeout", "5")
    assert code == 0
    sent = service.sent("POST", "/v1/sweeps")[0].json()
    assert sent == json.loads(request_file.read_text())
    assert "submitted sweep s1" in err and "sweep s1 queued" in err and "sweep s1 running" in err
    final_bar = err.rstrip("\n").split("\r")[-1]
    assert "compare-optimizers: 3/3 trials" in final_bar and "best val_loss=0.4321" in final_bar
    lines = out.splitlines()
    assert "status      succeeded" in lines and "progress    3/3 trials" in lines
    assert "best        val_loss 0.4321 (optimizer=adam(learning_rate=0.001) seed=0)" in lines
    assert "best model  m2" in lines
    header = lines.index(next(line for line in lines if line.startswith("#")))
    assert lines[header] == "#  job  status     val_loss  val_acc  epochs  seconds  params"
    best_row = "1  j2   succeeded    0.4321   0.8000      50      0.4  optimizer=adam(learning_rate"
    assert lines[header + 1].startswith(best_row)
    assert lines[header + 3].split()[:3] == ["3", "j3", "pruned"]  # cancelled by the pruner


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_sweep_wait_exits_1_unless_the_sweep_succeeded(
    service: FakeService, capsys: pytest.CaptureFixture[str], status: str
) -> None:
    service.route("GET", "/v1/sweeps/s1", json_response(sweep(status, 3)))
    code, out, _ = run(capsys, "sweep", "wait", "s1", "--json")
    assert code == 1 and json.loads(out)["status"] == status


def test_sweep_submit_without_wait_dry_run_and_bad_input(
    service: FakeService,
    capsys: pytest.CaptureFixture[str],
    request_file: Path,
    tmp_path: Path,
) -> None:
    service.route("POST", "/v1/sweeps", json_response(sweep("queued", 0, 12), 202))
    code, out, _ = run(capsys, "sweep", "submit", str(request_file), "--name", "mine")
    assert code == 0
    assert "submitted sweep s1 (queued, 0/12 trials)" in out and "trainsvc sweep wait s1" in out
    assert service.sent("POST", "/v1/sweeps")[0].json()["name"] == "mine"

    details = [{"field": "space.layers[9].units", "message": "no such field in the spec"}]
    service.route(
        "POST", "/v1/sweeps", error_response(422, "invalid_sweep", "1 problem(s)", details)
    )
    code, out, err = run(capsys, "sweep", "submit", str(request_file))
    assert code == 1 and out == ""
    assert "(422 invalid_sweep): space.layers[9].units: no such field in the spec" in err
    (tmp_path / "list.json").write_text("[1]")
    code, _, err = run(capsys, "sweep", "submit", "list.json")
    assert code == 1 and "a sweep request is a JSON object" in err
    assert len(service.sent("POST", "/v1/sweeps")) == 2


def test_sweep_dry_run_lists_the_trials(
    service: FakeService, capsys: pytest.CaptureFixture[str], request_file: Path
) -> None:
    plan = {
        "valid": True,
        "strategy": "grid",
        "total": 2,
        "trials": [{"optimizer": SGD, "seed": s} for s in (0, 1)],
        "space": None,
        "largest": {"params": {"optimizer": SGD, "seed": 0}, "total_params": 4451},
        "cost": {
            "params": 4451,
            "fit_rows": 640,
            "flops_per_epoch": 1e7,
            "flops": 1e9,
            "data_bytes": 2**20,
            "estimated_seconds": None,
        },
    }
    service.route("POST", "/v1/sweeps", json_response(plan))
    code, out, _ = run(capsys, "sweep", "submit", str(request_file), "--dry-run")
    assert code == 0
    assert service.sent("POST", "/v1/sweeps")[0].query == {"dry_run": "true"}
    lines = out.splitlines()
    assert lines[0] == "grid: 2 trial(s)"
    assert lines[3].split() == ["2", "optimizer=sgd(learning_rate=0.01)", "seed=1"]
    assert lines[4] == "largest network: 4,451 params (optimizer=sgd(learning_rate=0.01) seed=0)"
    assert lines[5].startswith("cost: 1e+09 FLOP (1e+07 per epoch), 1 MiB of data; no time")
    space = {"layers[0].units": {"low": 8, "high": 128, "type": "int"}}
    service.route(
        "POST",
        "/v1/sweeps",
        json_response({**plan, "strategy": "tpe", "trials": None, "space": space}),
    )
    code, out, _ = run(capsys, "sweep", "submit", str(request_file), "--dry-run")
    assert out.splitlines()[:2] == [
        "tpe: 2 trial(s)",
        '  layers[0].units: {"low": 8, "high": 128, "type": "int"}',
    ]


def test_sweep_status_list_cancel_and_plot(
    service: FakeService, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    service.route("GET", "/v1/sweeps/s1", json_response(sweep(finished=2)))
    service.route(
        "GET",
        "/v1/sweeps",
        json_response({"items": [sweep(), sweep("queued", 0, id="s2", best=None)]}),
    )
    service.route("POST", "/v1/sweeps/s1/cancel", json_response(sweep("cancelled", 3), 202))
    service.route("POST", "/v1/sweeps/s2/cancel", error_response(409, "conflict", "finished"))
    png = b"\x89PNG\r\n\x1a\nsweep"
    service.route(
        "GET", "/v1/sweeps/s1/plot.png", Response(200, png, {"Content-Type": "image/png"})
    )

    code, out, _ = run(capsys, "sweep", "status", "s1")
    assert code == 0 and "progress    2/3 trials" in out and "best job    j2" in out
    assert [line.split()[1] for line in out.splitlines()[-3:]] == ["j2", "j1", "j3"]
    code, out, _ = run(capsys, "sweep", "list", "--limit", "5")
    assert [line.split()[:4] for line in out.splitlines()] == [
        ["id", "name", "status", "trials"],
        ["s1", "compare-optimizers", "running", "1/3"],
        ["s2", "compare-optimizers", "queued", "0/3"],
    ]
    assert out.splitlines()[1].split()[4] == "0.4321" and out.splitlines()[2].split()[4] == "-"
    code, out, _ = run(capsys, "sweep", "cancel", "s1")
    assert (code, out) == (0, "sweep s1 cancelled (3/3 trials finished)\n")
    code, _, err = run(capsys, "sweep", "cancel", "s2")
    assert code == 1 and "finished (409 conflict)" in err
    code, out, _ = run(capsys, "sweep", "plot", "s1", "-o", "sweep.png")
    assert code == 0 and "wrote sweep.png (13 bytes)" in out
    assert (tmp_path / "sweep.png").read_bytes() == png
    assert run(capsys, "sweep")[0] == 2
    assert run(capsys, "sweep", "list", "--status", "done")[0] == 2


def test_params_text_is_short() -> None:
    assert params_text({"optimizer": MOMENTUM, "layers[0].units": 64, "lr": 0.000123456}) == (
        "optimizer=sgd(learning_rate=0.01, momentum=0.9) layers[0].units=64 lr=0.0001235"
    )
    assert params_text({}) == "-"


def test_ctrl_c_stops_watching_the_sweep_without_cancelling_it(
    service: FakeService,
    capsys: pytest.CaptureFixture[str],
    request_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service.route("POST", "/v1/sweeps", json_response(sweep("queued", 0), 202))

    def interrupted(self: Client, sweep_id: str, **kwargs: Any) -> Json:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "wait_sweep", interrupted)
    code, _, err = run(capsys, "sweep", "submit", str(request_file), "--wait")
    assert code == 130
    assert "stopped watching; sweep s1 keeps running" in err
    assert "trainsvc sweep wait s1" in err and "trainsvc sweep cancel s1" in err
    assert service.sent("POST", "/v1/sweeps/s1/cancel") == []
