"""The trainsvc command: arguments, key lookup, output and exit codes, against a fake server."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_service import (
    FakeService,
    Request,
    Response,
    error_response,
    job,
    json_response,
    sse,
)
from trainsvc_client import Client, cli


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeService]:
    fake = FakeService().start()
    monkeypatch.setenv("TRAINSVC_URL", fake.url)
    monkeypatch.setenv("TRAINSVC_API_KEY", "env-key")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Client, "reconnect_delay", 0.01)
    yield fake
    fake.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the command; return its exit status, stdout and stderr."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def finished(status: str, **fields: Any) -> dict[str, Any]:
    return job(
        "j1",
        status,
        finished_at="2025-01-02T03:04:09.5Z",
        progress={"epoch": 3, "epochs": 3},
        **fields,
    )


def stream_to(final: dict[str, Any]) -> Response:
    rows = [
        ("epoch", {"epoch": e, "loss": 1 / e, "accuracy": 0.5 + e / 10, "val_loss": 0.9}, e)
        for e in (1, 2, 3)
    ]
    return sse(
        ("status", job("j1", "queued"), None),
        ("status", job("j1"), None),
        *rows,
        ("status", final, None),
    )


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"name": "seed-example", "engine": "numpy", "epochs": 3}))
    return path


def test_submit_wait_shows_progress_and_the_result(
    service: FakeService, capsys: pytest.CaptureFixture[str], spec_file: Path
) -> None:
    service.route("POST", "/v1/jobs", json_response(job("j1", "queued"), 202))
    final = finished(
        "succeeded", model_id="m1", metrics={"test_loss": 0.4321, "test_accuracy": 0.8125}
    )
    service.route("GET", "/v1/jobs/j1/events", stream_to(final))
    code, out, err = run(capsys, "submit", str(spec_file), "--wait", "--engine", "keras")
    assert code == 0
    assert service.sent("POST", "/v1/jobs")[0].json()["engine"] == "keras"
    assert "job j1 queued" in err and "job j1 running" in err
    assert "3/3" in err and "loss=0.3333" in err and "acc=0.8" in err and "val_loss=0.9" in err
    assert out.splitlines() == [
        "job j1 succeeded in 3.5 s after 3 epoch(s)",
        "test  loss 0.4321  accuracy 0.8125",
        "model m1",
    ]


def test_wait_shows_a_retried_attempt_from_its_first_epoch(
    service: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    first = [("epoch", {"epoch": e, "loss": 2.0}, e) for e in (1, 2)]
    second = [("epoch", {"epoch": e, "loss": 0.25 * e}, e) for e in (1, 2, 3)]
    service.route(
        "GET",
        "/v1/jobs/j1/events",
        sse(
            ("status", job("j1"), None),
            *first,
            ("status", job("j1", "queued", attempts=2), None),
            ("status", job("j1", attempts=2), None),
            *second,
            ("status", finished("succeeded", attempts=2, model_id="m1"), None),
        ),
    )
    code, out, err = run(capsys, "wait", "j1")
    assert code == 0
    assert "job j1 queued (attempt 2)" in err and "job j1 running (attempt 2)" in err
    final_bar = err.rstrip("\n").split("\r")[-1]
    assert "3/3" in final_bar and final_bar.endswith("loss=0.7500")
    assert out.startswith("job j1 succeeded in 3.5 s after 3 epoch(s)")


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_submit_wait_exits_1_when_the_job_does_not_succeed(
    service: FakeService, capsys: pytest.CaptureFixture[str], spec_file: Path, status: str
) -> None:
    service.route("POST", "/v1/jobs", json_response(job("j1", "queued"), 202))
    error = {"code": "diverged" if status == "failed" else "cancelled", "message": "it stopped"}
    service.route("GET", "/v1/jobs/j1/events", stream_to(finished(status, error=error)))
    code, out, _err = run(capsys, "submit", str(spec_file), "--wait")
    assert code == 1
    assert f"job j1 {status}" in out
    assert f"error {error['code']}: it stopped" in out


def test_submit_without_wait_and_with_json(
    service: FakeService, capsys: pytest.CaptureFixture[str], spec_file: Path
) -> None:
    service.route("POST", "/v1/jobs", json_response(job("j1", "queued"), 202))
    code, out, _ = run(capsys, "submit", str(spec_file))
    assert code == 0 and "submitted job j1 (queued)" in out and "trainsvc wait j1" in out
    code, out, _ = run(
        capsys, "submit", str(spec_file), "--json", "--name", "renamed", "--dataset", "d9"
    )
    assert code == 0 and json.loads(out)["id"] == "j1"
    sent = service.sent("POST", "/v1/jobs")[1].json()
    assert (sent["name"], sent["dataset"]) == ("renamed", {"dataset_id": "d9"})


def test_dry_run_prints_the_model_summary(
    service: FakeService, capsys: pytest.CaptureFixture[str], spec_file: Path
) -> None:
    summary = {
        "valid": True,
        "task": "classification",
        "input_shape": [None, 20],
        "layers": [
            {
                "name": "dense",
                "type": "dense",
                "output_shape": [None, 64],
                "params": 1344,
                "trainable_params": 1344,
            },
            {
                "name": "dense_1",
                "type": "dense",
                "output_shape": [None, 3],
                "params": 195,
                "trainable_params": 195,
            },
        ],
        "total_params": 1539,
        "trainable_params": 1539,
        "non_trainable_params": 0,
        "cost": {
            "params": 1539,
            "fit_rows": 640,
            "flops_per_epoch": 5909760,
            "flops": 295488000,
            "data_bytes": 252000,
            "estimated_seconds": 0.0591,
        },
    }
    service.route("POST", "/v1/jobs", json_response(summary))
    code, out, _ = run(capsys, "submit", str(spec_file), "--dry-run")
    assert code == 0
    assert service.sent("POST", "/v1/jobs")[0].query == {"dry_run": "true"}
    assert "dense_1  dense  (None, 3)        195" in out
    assert "total params: 1,539" in out
    assert "cost: 2.95e+08 FLOP (5.91e+06 per epoch), 0.24 MiB of data; about 0.0591 s" in out


def test_a_spec_that_fails_validation_prints_one_line_with_field_paths(
    service: FakeService, capsys: pytest.CaptureFixture[str], spec_file: Path
) -> None:
    details = [{"field": "layers[0].units", "message": "Input should be greater than 0"}]
    service.route(
        "POST",
        "/v1/jobs",
        error_response(422, "invalid_spec", "the job spec has 1 problem(s)", details),
    )
    code, out, err = run(capsys, "submit", str(spec_file))
    assert code == 1 and out == ""
    assert err == (
        "trainsvc: error: the job spec has 1 problem(s) (422 invalid_spec): "
        "layers[0].units: Input should be greater than 0\n"
    )


def test_unreadable_spec_files(
    service: FakeService, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "submit", "missing.json")
    assert code == 1 and "cannot read spec missing.json" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(capsys, "submit", "bad.json")
    assert code == 1 and "bad.json is not valid JSON" in err
    assert service.requests == []


def test_ctrl_c_while_waiting_stops_watching_without_cancelling(
    service: FakeService,
    capsys: pytest.CaptureFixture[str],
    spec_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service.route("POST", "/v1/jobs", json_response(job("j1", "queued"), 202))

    def interrupted(self: Client, job_id: str, **kwargs: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "wait", interrupted)
    code, _, err = run(capsys, "submit", str(spec_file), "--wait")
    assert code == 130
    assert "stopped watching; job j1 keeps running" in err
    assert "trainsvc wait j1" in err
    assert service.sent("POST", "/v1/jobs/j1/cancel") == []


def test_api_key_comes_from_flag_then_env_then_dev_key_file(
    service: FakeService,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    service.route("GET", "/v1/jobs/j1", json_response(job("j1")))
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-api-key").write_text("file-key\n")
    run(capsys, "status", "j1", "--api-key", "flag-key")
    run(capsys, "status", "j1")
    monkeypatch.delenv("TRAINSVC_API_KEY")
    run(capsys, "status", "j1")
    (tmp_path / "var" / "dev-api-key").unlink()
    run(capsys, "status", "j1")
    sent = [r.headers.get("Authorization") for r in service.sent("GET", "/v1/jobs/j1")]
    assert sent == ["Bearer flag-key", "Bearer env-key", "Bearer file-key", None]


def test_401_says_where_the_key_came_from(
    service: FakeService, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service.route("GET", "/v1/jobs/j1", error_response(401, "unauthorized", "bad API key"))
    code, _, err = run(capsys, "status", "j1")
    assert code == 1 and "(401 unauthorized); the key from $TRAINSVC_API_KEY was refused\n" in err
    monkeypatch.delenv("TRAINSVC_API_KEY")
    code, _, err = run(capsys, "status", "j1")
    assert code == 1 and "no API key: pass --api-key, set TRAINSVC_API_KEY" in err


def test_connection_refused_is_one_line_naming_the_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = run(capsys, "--url", f"http://127.0.0.1:{port}", "list")
    assert (code, out) == (1, "")
    assert err == (
        f"trainsvc: error: cannot reach the service at http://127.0.0.1:{port}: "
        "connection refused (is the service running?)\n"
    )


def test_global_options_work_after_the_command(
    service: FakeService, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINSVC_URL", "http://127.0.0.1:1")
    service.route("GET", "/v1/jobs/j1", json_response(finished("succeeded", model_id="m1")))
    code, out, _ = run(capsys, "status", "j1", "--url", service.url)
    assert code == 0
    assert "status    succeeded" in out and "model     m1" in out and "epoch 3/3" in out


def test_usage_errors_exit_2(service: FakeService, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys)[0] == 2
    assert run(capsys, "list", "--limit", "0")[0] == 2
    assert run(capsys, "list", "--status", "done")[0] == 2
    assert run(capsys, "submit", "spec.json", "--engine", "torch")[0] == 2
    assert run(capsys, "datasets", "upload", "x.csv")[0] == 2  # --label is required
    assert service.requests == []


def test_list_pages_until_the_limit_and_prints_a_table(
    service: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    def page(request: Request) -> Response:
        start = int(request.query.get("cursor") or 0)
        size = int(request.query["limit"])
        items = [
            job(f"j{i}", "succeeded", metrics={"test_accuracy": 0.8})
            for i in range(start, start + size)
        ]
        return json_response({"items": items, "next_cursor": str(start + size)})

    service.route("GET", "/v1/jobs", page)
    code, out, _ = run(capsys, "list", "--limit", "150", "--status", "succeeded")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "name",
        "status",
        "engine",
        "epoch",
        "accuracy",
        "created",
        "(UTC)",
    ]
    assert len(lines) == 151
    assert lines[1].split() == [
        "j0",
        "seed-example",
        "succeeded",
        "numpy",
        "0/3",
        "0.8000",
        "2025-01-02",
        "03:04:05",
    ]
    assert [r.query for r in service.sent("GET", "/v1/jobs")] == [
        {"status": "succeeded", "limit": "100"},
        {"status": "succeeded", "limit": "100", "cursor": "100"},
    ]


def test_metrics_table_and_json(service: FakeService, capsys: pytest.CaptureFixture[str]) -> None:
    history = [
        {"epoch": 1, "loss": 1.23456, "accuracy": 0.5, "seconds": 0.01},
        {"epoch": 2, "loss": 0.98765, "accuracy": 0.625, "seconds": 0.02},
    ]
    service.route("GET", "/v1/jobs/j1/metrics", json_response({"job_id": "j1", "history": history}))
    code, out, _ = run(capsys, "metrics", "j1")
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["epoch", "loss", "accuracy", "seconds"],
        ["1", "1.2346", "0.5000", "0.010"],
        ["2", "0.9877", "0.6250", "0.020"],
    ]
    code, out, _ = run(capsys, "metrics", "j1", "--json")
    assert json.loads(out)["history"] == history


def test_predict_takes_instances_from_one_source(
    service: FakeService,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    def predict(request: Request) -> Response:
        rows = request.json()["instances"]
        return json_response(
            {
                "model_id": "m1",
                "predictions": ["b"] * len(rows),
                "probabilities": [[0.25, 0.75]] * len(rows),
            }
        )

    service.route("POST", "/v1/models/m1/predict", predict)
    code, out, _ = run(capsys, "predict", "m1", "--instances", "[1, 2]")
    assert code == 0 and out.splitlines()[1].split() == ["0", "b", "0.7500"]
    (tmp_path / "rows.json").write_text('{"instances": [[1, 2], [3, 4]]}')
    assert run(capsys, "predict", "m1", "--file", "rows.json")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("[[5, 6]]"))
    code, out, _ = run(capsys, "predict", "m1", "-", "--json")
    assert json.loads(out)["predictions"] == ["b"]
    sent = [r.json()["instances"] for r in service.sent("POST", "/v1/models/m1/predict")]
    assert sent == [[[1, 2]], [[1, 2], [3, 4]], [[5, 6]]]
    assert run(capsys, "predict", "m1")[0] == 2
    assert run(capsys, "predict", "m1", "-", "--instances", "[1]")[0] == 2
    code, _, err = run(capsys, "predict", "m1", "--instances", "[1,")
    assert code == 2 and "--instances is not valid JSON" in err
    assert len(service.sent("POST", "/v1/models/m1/predict")) == 3


def test_cancel_and_conflict(service: FakeService, capsys: pytest.CaptureFixture[str]) -> None:
    service.route(
        "POST",
        "/v1/jobs/j1/cancel",
        json_response(job("j1", "running", cancel_requested=True), 202),
    )
    service.route(
        "POST",
        "/v1/jobs/j2/cancel",
        error_response(409, "conflict", "job j2 already finished (succeeded)"),
    )
    service.route("POST", "/v1/jobs/j3/cancel", json_response(job("j3", "cancelled"), 202))
    code, out, _ = run(capsys, "cancel", "j1")
    assert code == 0 and out == "job j1 is running: it stops after its current epoch\n"
    code, out, _ = run(capsys, "cancel", "j3")
    assert code == 0 and out == "job j3 cancelled\n"
    code, _, err = run(capsys, "cancel", "j2")
    assert code == 1 and "job j2 already finished (succeeded) (409 conflict)" in err


def test_plot_writes_the_png(
    service: FakeService, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    png = b"\x89PNG\r\n\x1a\nrest"
    service.route("GET", "/v1/jobs/j1/plot.png", Response(200, png, {"Content-Type": "image/png"}))
    code, out, _ = run(capsys, "plot", "j1", "-o", "curves.png")
    assert code == 0 and "wrote curves.png (12 bytes)" in out
    assert (tmp_path / "curves.png").read_bytes() == png
    assert run(capsys, "plot", "j1")[0] == 0
    assert (tmp_path / "j1.png").read_bytes() == png


def test_datasets_commands(
    service: FakeService, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dataset = {
        "id": "d1",
        "name": "flowers",
        "rows": 2,
        "columns": ["a", "b", "kind"],
        "features": ["a", "b"],
        "label": "kind",
        "label_counts": {"x": 1, "y": 1},
        "bytes": 20,
        "created_at": "2025-01-02T03:04:05Z",
    }
    service.route("POST", "/v1/datasets", json_response(dataset, 201))
    service.route("GET", "/v1/datasets", json_response({"items": [dataset], "next_cursor": None}))
    service.route("GET", "/v1/datasets/d1", json_response(dataset))
    (tmp_path / "flowers.csv").write_text("a,b,kind\n1,2,x\n3,4,y\n")
    code, out, _ = run(capsys, "datasets", "upload", "flowers.csv", "--label", "kind")
    assert code == 0 and "labels    x: 1, y: 1" in out and '{"dataset_id": "d1"}' in out
    assert service.sent("POST", "/v1/datasets")[0].query == {"label": "kind", "name": "flowers"}
    code, out, _ = run(capsys, "datasets", "list")
    assert out.splitlines()[1].split()[:5] == ["d1", "flowers", "2", "2", "kind"]
    code, out, _ = run(capsys, "datasets", "show", "d1", "--json")
    assert json.loads(out) == dataset
    code, _, err = run(capsys, "datasets", "upload", "nope.csv", "--label", "kind")
    assert code == 1 and "cannot read nope.csv" in err


def test_model_export_writes_the_file_in_the_asked_format(
    service: FakeService, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blobs = {"onnx": b"\x08\x08onnx-bytes", "npz": b"PK\x03\x04npz-bytes"}

    def export(request: Request) -> Response:
        fmt = request.query.get("format", "onnx")
        if fmt not in blobs:
            return error_response(422, "validation_error", "format: must be 'onnx' or 'npz'")
        return Response(200, blobs[fmt], {"Content-Type": "application/octet-stream"})

    service.route("GET", "/v1/models/m1/export", export)
    code, out, _ = run(capsys, "model", "export", "m1", "--format", "onnx", "-o", "m.onnx")
    assert code == 0 and "wrote m.onnx (12 bytes)" in out
    assert (tmp_path / "m.onnx").read_bytes() == blobs["onnx"]
    assert run(capsys, "model", "export", "m1", "--format", "npz")[0] == 0
    assert (tmp_path / "model-m1.npz").read_bytes() == blobs["npz"]
    assert run(capsys, "model", "export", "m1")[0] == 0  # onnx by default
    assert (tmp_path / "model-m1.onnx").read_bytes() == blobs["onnx"]
    sent = service.sent("GET", "/v1/models/m1/export")
    assert [r.query["format"] for r in sent] == ["onnx", "npz", "onnx"]
    assert all(r.headers["Authorization"] == "Bearer env-key" for r in sent)

    assert Client().export("m1", "npz") == blobs["npz"]
    code, _, err = run(capsys, "model", "export", "m1", "--format", "pmml")
    assert code == 2 and "invalid choice" in err  # refused before any request
    code, _, err = run(capsys, "model", "export")
    assert code == 2 and "which model?" in err
    code, _, err = run(capsys, "model", "m1", "-o", "x.onnx")
    assert code == 2 and "model export ID" in err
    assert len(service.sent("GET", "/v1/models/m1/export")) == 4


def test_model_shows_its_evaluation(
    service: FakeService, capsys: pytest.CaptureFixture[str]
) -> None:
    model = {
        "id": "m1",
        "job_id": "j1",
        "engine": "numpy",
        "task": "classification",
        "n_features": 4,
        "classes": ["a", "b"],
        "params": {"total": 10},
        "metrics": {"test_accuracy": 0.9},
        "evaluation": {
            "task": "classification",
            "n_samples": 30,
            "accuracy": 0.9,
            "macro_f1": 0.8765,
            "roc_auc": None,
            "log_loss": 0.25,
        },
    }
    service.route("GET", "/v1/models/m1", json_response(model))
    code, out, _ = run(capsys, "model", "m1")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("evaluation"))
    assert "accuracy 0.9000" in line and "macro F1 0.8765" in line and "ROC AUC -" in line
    assert "(test split, 30 rows)" in line
    service.route("GET", "/v1/models/m2", json_response({**model, "id": "m2", "evaluation": None}))
    code, out, _ = run(capsys, "model", "m2")
    assert code == 0 and "ROC AUC" not in out
