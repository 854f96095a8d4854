"""The `trainsvc` command and the Python client over real HTTP, against a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from werkzeug.serving import make_server

from tests.conftest import KEYS
from tests.integration.conftest import Stack
from tests.support import ROOT, SEED_SPEC, diverging_spec
from trainsvc_client import ApiError, Client

pytestmark = pytest.mark.integration

TRAINSVC = Path(sys.executable).with_name("trainsvc")  # the console script `pip install` made


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> Iterator[str]:
    """The stack's Flask app served over real HTTP (threaded, so event streams run alongside)."""
    server = make_server("127.0.0.1", 0, stack.client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def env(api_url: str) -> dict[str, str]:
    return {**os.environ, "TRAINSVC_URL": api_url, "TRAINSVC_API_KEY": KEYS["alice"]}


@pytest.fixture
def api(api_url: str) -> Client:
    return Client(api_url, KEYS["alice"])


def trainsvc(
    env: dict[str, str], *args: str, cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed `trainsvc` command and capture its output."""
    return subprocess.run(
        [str(TRAINSVC), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_spec(tmp_path: Path, spec: dict[str, Any], name: str = "spec.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


def seed(epochs: int, **changes: Any) -> dict[str, Any]:
    return {**SEED_SPEC, "epochs": epochs, **changes}


def test_submit_wait_then_status_list_metrics_predict(
    env: dict[str, str], api: Client, tmp_path: Path
) -> None:
    result = trainsvc(env, "submit", str(write_spec(tmp_path, seed(6))), "--wait")
    assert result.returncode == 0, result.stderr
    first_line = result.stderr.splitlines()[0]
    assert first_line.startswith("submitted job ")
    job_id = first_line.split()[-1]
    job = api.job(job_id)
    assert job["status"] == "succeeded"
    # The bar ends full, with the last epoch's metrics from the event stream.
    last = api.metrics(job_id)["history"][-1]
    assert "6/6" in result.stderr
    assert f"loss={last['loss']:#.4g}" in result.stderr
    assert f"val_acc={last['val_accuracy']:#.4g}" in result.stderr
    summary = result.stdout.splitlines()
    assert summary[0].startswith(f"job {job_id} succeeded in ")
    assert summary[0].endswith(" after 6 epoch(s)")
    metrics = job["metrics"]
    assert summary[1] == (
        f"test  loss {metrics['test_loss']:#.4g}  accuracy {metrics['test_accuracy']:#.4g}"
    )
    assert summary[2] == f"model {job['model_id']}"

    status = trainsvc(env, "status", job_id)
    assert status.returncode == 0
    assert "status    succeeded" in status.stdout
    assert f"model     {job['model_id']}" in status.stdout

    listed = trainsvc(env, "list", "--status", "succeeded", "--json")
    assert job_id in [j["id"] for j in json.loads(listed.stdout)]
    table = trainsvc(env, "list", "--limit", "3").stdout.splitlines()
    assert table[0].split()[:3] == ["id", "name", "status"]
    assert any(line.startswith(job_id) and " succeeded " in line for line in table[1:4])

    history = trainsvc(env, "metrics", job_id).stdout.splitlines()
    assert history[0].split() == [
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
    ]
    assert [line.split()[0] for line in history[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert json.loads(trainsvc(env, "metrics", job_id, "--json").stdout) == api.metrics(job_id)

    rows = np.random.default_rng(0).normal(size=(3, 20)).round(3).tolist()
    predicted = trainsvc(env, "predict", job["model_id"], "--instances", json.dumps(rows), "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout) == api.predict(job["model_id"], rows)
    (tmp_path / "rows.json").write_text(json.dumps({"instances": rows}))
    shown = trainsvc(env, "predict", job["model_id"], "--file", str(tmp_path / "rows.json"))
    assert [line.split()[0] for line in shown.stdout.splitlines()] == ["row", "0", "1", "2"]

    plot = trainsvc(env, "plot", job_id, "-o", str(tmp_path / "curves.png"))
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    late = trainsvc(env, "cancel", job_id)
    assert late.returncode == 1
    assert late.stdout == ""
    assert late.stderr.startswith("trainsvc: error: ") and "409" in late.stderr
    assert len(late.stderr.splitlines()) == 1


def test_a_failed_job_exits_1_with_its_error(env: dict[str, str], tmp_path: Path) -> None:
    result = trainsvc(env, "submit", str(write_spec(tmp_path, diverging_spec())), "--wait")
    assert result.returncode == 1
    assert " failed " in result.stdout.splitlines()[0]
    assert "error diverged: " in result.stdout
    assert not any(line.startswith("model ") for line in result.stdout.splitlines())


def test_an_invalid_spec_is_one_line_with_its_field_path(
    env: dict[str, str], tmp_path: Path
) -> None:
    spec = seed(3)
    spec["layers"] = [*spec["layers"][:-1], {"type": "dense", "units": 3, "activation": "soft"}]
    result = trainsvc(env, "submit", str(write_spec(tmp_path, spec)), "--wait")
    assert result.returncode == 1
    assert result.stderr.startswith("trainsvc: error: ")
    assert "(422 invalid_spec): layers[9].activation: " in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_dry_run_shows_the_summary_and_queues_nothing(
    env: dict[str, str], api: Client, tmp_path: Path
) -> None:
    before = api.jobs(limit=1)["items"]
    result = trainsvc(env, "submit", str(write_spec(tmp_path, seed(3))), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "total params: 4,451" in result.stdout
    assert api.jobs(limit=1)["items"] == before


def test_ctrl_c_stops_watching_and_the_job_keeps_running(
    env: dict[str, str], api: Client, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, seed(3000, name="long"))
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [str(TRAINSVC), "submit", str(spec), "--wait"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            # Ctrl-C as a terminal sends it: a suite started in the background (`make test &`)
            # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 60
            while "/3000" not in log.read_text():  # the bar is up: epochs are arriving
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    text = log.read_text()
    assert proc.returncode == 130
    job_id = text.splitlines()[0].split()[-1]
    assert f"stopped watching; job {job_id} keeps running" in text
    assert f"trainsvc wait {job_id}" in text
    assert api.job(job_id)["status"] == "running"

    cancelled = trainsvc(env, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    # Running: the worker stops at its next epoch boundary, which may already have come by the
    # time the answer is read back.
    assert cancelled.stdout in (
        f"job {job_id} is running: it stops after its current epoch\n",
        f"job {job_id} cancelled\n",
    )
    waited = trainsvc(env, "wait", job_id)
    assert waited.returncode == 1
    assert f"job {job_id} cancelled" in waited.stdout.splitlines()[0]
    assert api.job(job_id)["status"] == "cancelled"


def test_client_wait_and_events_follow_the_real_stream(api: Client) -> None:
    job = api.submit(seed(5), idempotency_key=f"wait-{time.monotonic_ns()}")
    epochs: list[int] = []
    statuses: list[str] = []
    final = api.wait(
        job["id"],
        on_epoch=lambda row: epochs.append(row["epoch"]),
        on_status=lambda j: statuses.append(j["status"]),
        timeout=120,
    )
    assert final["status"] == "succeeded"
    assert epochs == [1, 2, 3, 4, 5]
    assert statuses[-1] == "succeeded"
    # A finished job's stream replays what comes after the given epoch, then its final status.
    events = list(api.events(job["id"], after=3))
    assert [(name, data.get("epoch")) for name, data in events] == [
        ("status", None),
        ("epoch", 4),
        ("epoch", 5),
    ]
    assert events[0][1]["status"] == "succeeded"
    with pytest.raises(ApiError) as caught:
        list(api.events("no-such-job"))
    assert caught.value.status == 404


def test_client_wait_resumes_when_the_server_ends_the_stream(
    api: Client, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server ends each stream after EVENTS_MAX_SECONDS; wait() must resume from the last
    # epoch it saw (Last-Event-ID) and deliver every epoch exactly once.
    monkeypatch.setitem(stack.client.application.config, "EVENTS_MAX_SECONDS", 0.3)
    monkeypatch.setattr(api, "reconnect_delay", 0.05)
    resumed_from: list[str | None] = []
    stream = api.stream

    def counting(job_id: str, last_event_id: str | None = None, **kw: Any) -> Any:
        resumed_from.append(last_event_id)
        return stream(job_id, last_event_id, **kw)

    monkeypatch.setattr(api, "stream", counting)
    job = api.submit(seed(400, name="resumed"))
    epochs: list[int] = []
    final = api.wait(job["id"], on_epoch=lambda row: epochs.append(row["epoch"]), timeout=120)
    assert final["status"] == "succeeded"
    assert epochs == list(range(1, 401))
    assert len(resumed_from) > 1 and resumed_from[0] is None
    assert any(last is not None and int(last) > 0 for last in resumed_from[1:])


def test_datasets_upload_list_show_and_train(
    env: dict[str, str], api: Client, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    lines = ["a,b,c,answer"] + [
        f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{t}" for r, t in zip(X, y, strict=True)
    ]
    csv = tmp_path / "answers.csv"
    csv.write_text("\n".join(lines) + "\n")

    uploaded = trainsvc(env, "datasets", "upload", str(csv), "--label", "answer", "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset = json.loads(uploaded.stdout)
    assert (dataset["name"], dataset["rows"], dataset["label"]) == ("answers", 200, "answer")
    assert dataset["features"] == ["a", "b", "c"]
    assert dataset["label_counts"] == {"no": int((y == "no").sum()), "yes": int((y == "yes").sum())}

    listing = trainsvc(env, "datasets", "list").stdout.splitlines()
    assert any(line.startswith(dataset["id"]) for line in listing[1:])
    shown = trainsvc(env, "datasets", "show", dataset["id"])
    assert f"labels    no: {dataset['label_counts']['no']}" in shown.stdout

    spec = {
        "name": "from-csv",
        "dataset": {"dataset_id": dataset["id"]},
        "layers": [{"type": "dense", "units": 2, "activation": "softmax"}],
        "loss": "sparse_categorical_crossentropy",
        "optimizer": "adam",
        "epochs": 3,
    }
    trained = trainsvc(env, "submit", str(write_spec(tmp_path, spec)), "--wait", "--json")
    assert trained.returncode == 0, trained.stderr
    job = json.loads(trained.stdout)
    assert job["status"] == "succeeded"
    predicted = api.predict(job["model_id"], [[3, 3, 0], [-3, -3, 0]])
    assert set(predicted["predictions"]) <= {"yes", "no"}

    missing = trainsvc(env, "datasets", "upload", str(tmp_path / "nope.csv"), "--label", "x")
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_the_dev_key_file_is_used_when_no_key_is_given(env: dict[str, str], tmp_path: Path) -> None:
    del env["TRAINSVC_API_KEY"]
    refused = trainsvc(env, "list", cwd=tmp_path)
    assert refused.returncode == 1
    assert "(401 unauthorized)" in refused.stderr and "no API key" in refused.stderr
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-api-key").write_text(KEYS["bob"] + "\n")
    accepted = trainsvc(env, "list", "--json", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout) == []  # bob's jobs: none; alice's are not his
