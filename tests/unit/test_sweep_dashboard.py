"""The dashboard's sweep pages without a browser: Compare optimizers, leaderboard, curves."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from core.db import Database
from core.models import Job
from core.spec import parse_spec
from core.sweep_spec import plan_sweep
from service.dashboard import compare_optimizers
from tests.sse import events as parse_events
from tests.unit.test_api import small_spec
from tests.unit.test_dashboard import csrf, sign_in, submit_form
from tests.unit.test_live import PNG_MAGIC
from worker.jobs import run_job
from worker.sweeps import advance

ROOT = Path(__file__).resolve().parents[2]
SEED_SPEC = json.loads((ROOT / "examples" / "seed_job.json").read_text())


def test_the_example_is_the_compare_optimizers_sweep_of_the_seed_job() -> None:
    example = json.loads((ROOT / "examples" / "compare_optimizers.json").read_text())
    assert example == compare_optimizers(SEED_SPEC)
    plan = plan_sweep(example, lambda _dataset_id: None)
    assert plan.total == 12 and plan.request.strategy == "grid"
    trials = [params for params, _ in plan.checked]
    optimizers = {json.dumps(t["optimizer"], sort_keys=True) for t in trials}
    assert optimizers == {
        '{"learning_rate": 0.01, "type": "sgd"}',
        '{"learning_rate": 0.01, "momentum": 0.9, "type": "sgd"}',
        '{"learning_rate": 0.001, "type": "rmsprop"}',
        '{"learning_rate": 0.001, "type": "adam"}',
    }
    assert sorted(t["seed"] for t in trials) == [0] * 4 + [1] * 4 + [2] * 4
    for _, spec in plan.checked:  # every trial is the seed job but for its optimizer and seed
        stored = spec.model_dump(mode="json")
        assert stored["layers"] == parse_spec(SEED_SPEC).model_dump(mode="json")["layers"]
        assert stored["epochs"] == 50


def finish(database: Database, sweep_id: str) -> None:
    """Run the sweep as the workers would: create trials, train them, until none is created."""
    while created := advance(database, sweep_id):
        for job_id in created:
            assert run_job(database, job_id) == "succeeded"


@pytest.fixture
def finished_job(client: FlaskClient, database: Database) -> tuple[str, str]:
    """A signed-in client's CSRF token and the URL of its finished 3-epoch job."""
    token = sign_in(client)
    job_url = submit_form(client, token, small_spec(epochs=3)).headers["Location"]
    assert run_job(database, job_url.rsplit("/", 1)[-1]) == "succeeded"
    return token, job_url


def test_compare_optimizers_runs_the_sweep_and_its_page_shows_it(
    client: FlaskClient, database: Database, finished_job: tuple[str, str]
) -> None:
    token, job_url = finished_job
    page = client.get(job_url).get_data(as_text=True)
    assert 'id="compare-form"' in page and 'id="compare-form" hidden' not in page
    assert 'href="/ui/sweeps"' in page  # the navigation link
    response = client.post(job_url + "/compare", data={"csrf_token": token})
    assert response.status_code == 303
    sweep_url = response.headers["Location"]
    assert sweep_url.startswith("/ui/sweeps/")
    sweep_id = sweep_url.rsplit("/", 1)[-1]

    page = client.get(sweep_url).get_data(as_text=True)
    assert "compare-optimizers: seed-example" in page and 'id="cancel-form"' in page
    assert "No trials yet." in page
    board = client.get(sweep_url + "/board").get_data(as_text=True)
    assert 'data-status="queued"' in board and "0/12" in board

    finish(database, sweep_id)
    board = client.get(sweep_url + "/board").get_data(as_text=True)
    assert 'data-status="succeeded"' in board and "12/12" in board
    rows = board.split("<tbody>", 1)[1].split("<tr ")[1:]
    assert len(rows) == 12 and 'class="best"' in rows[0]
    trial_links = [row.split('href="', 1)[1].split('"', 1)[0] for row in rows]
    assert all(link.startswith("/ui/jobs/") for link in trial_links)
    assert "optimizer=sgd(learning_rate=0.01, momentum=0.9) seed=" in board
    assert "optimizer=adam(learning_rate=0.001) seed=" in board

    # The page's curves come from the sweep's event stream (the API's, behind the cookie).
    events = list(parse_events([client.get(sweep_url + "/events").get_data(as_text=True)]))
    trials = {e.data["job_id"]: e.data["params"] for e in events if e.event == "trial"}
    epochs = [e.data for e in events if e.event == "epoch"]
    assert len(trials) == 12 and len(epochs) == 12 * 3
    assert {(row["job_id"], row["epoch"]) for row in epochs} == {
        (job_id, epoch) for job_id in trials for epoch in (1, 2, 3)
    }
    assert all(isinstance(row["val_loss"], float) for row in epochs)
    last = events[-1]
    assert last.event == "sweep" and last.data["status"] == "succeeded"
    assert f"/ui/jobs/{last.data['best']['job_id']}" == trial_links[0]

    # A trial's page says whose trial it is, and links back.
    trial_page = client.get(trial_links[0]).get_data(as_text=True)
    assert 'id="trial-of"' in trial_page and f'href="/ui/sweeps/{sweep_id}"' in trial_page

    page = client.get(sweep_url).get_data(as_text=True)
    assert 'id="cancel-form"' not in page
    plot = client.get(sweep_url + "/plot.png")
    assert plot.status_code == 200 and plot.data.startswith(PNG_MAGIC)
    listing = client.get("/ui/sweeps").get_data(as_text=True)
    assert f'data-sweep-id="{sweep_id}"' in listing and "12/12" in listing
    assert sweep_id in client.get("/ui/sweeps/rows").get_data(as_text=True)


def test_cancel_a_sweep_from_its_page(
    client: FlaskClient, database: Database, finished_job: tuple[str, str]
) -> None:
    token, job_url = finished_job
    sweep_url = client.post(job_url + "/compare", data={"csrf_token": token}).headers["Location"]
    created = advance(database, sweep_url.rsplit("/", 1)[-1])
    assert len(created) == 4  # max_parallel
    assert client.post(sweep_url + "/cancel", data={"csrf_token": "forged"}).status_code == 403
    assert client.post(sweep_url + "/cancel", data={"csrf_token": token}).status_code == 303
    board = client.get(sweep_url + "/board").get_data(as_text=True)
    assert 'data-status="cancelled"' in board
    assert board.count('class="badge status-cancelled"') == 1 + 4
    assert client.post(sweep_url + "/cancel", data={"csrf_token": token}).status_code == 409


def test_a_pruned_trial_says_so_on_the_board(
    client: FlaskClient, database: Database, finished_job: tuple[str, str]
) -> None:
    token, job_url = finished_job
    sweep_url = client.post(job_url + "/compare", data={"csrf_token": token}).headers["Location"]
    first, second, *_ = advance(database, sweep_url.rsplit("/", 1)[-1])
    assert run_job(database, first) == "succeeded"
    with database.begin() as session:  # as the trial's pruner leaves it
        session.execute(
            update(Job)
            .where(Job.id == second)
            .values(
                status="cancelled",
                error_code="pruned",
                error_message="pruned after epoch 2 by the median rule",
                info={"pruned": {"epoch": 2, "rule": "median"}},
                progress_epoch=2,
            )
        )
    board = client.get(sweep_url + "/board").get_data(as_text=True)
    rows = board.split("<tbody>", 1)[1].split("<tr ")[1:]
    assert f'data-job-id="{first}"' in rows[0] and 'class="best"' in rows[0]
    assert f'data-job-id="{second}"' in rows[1]
    assert "status-cancelled" in rows[1] and ">pruned at 2</span>" in rows[1]


def test_compare_needs_a_finished_job_and_sweeps_are_per_tenant(
    client: FlaskClient, app: Flask, finished_job: tuple[str, str]
) -> None:
    token, job_url = finished_job
    queued = submit_form(client, token, small_spec()).headers["Location"]
    assert 'id="compare-form"\n        hidden' in client.get(queued).get_data(as_text=True)
    assert client.post(queued + "/compare", data={"csrf_token": token}).status_code == 409
    sweep_url = client.post(job_url + "/compare", data={"csrf_token": token}).headers["Location"]

    bob = app.test_client()
    sign_in(bob, "bob")
    for suffix in ("", "/board", "/events", "/plot.png"):
        assert bob.get(sweep_url + suffix).status_code == 404, suffix
    assert sweep_url.rsplit("/", 1)[-1] not in bob.get("/ui/sweeps").get_data(as_text=True)
    assert bob.post(job_url + "/compare", data={"csrf_token": csrf(bob, "/")}).status_code == 404
    signed_out = app.test_client()
    assert signed_out.get(sweep_url).status_code == 302
    assert signed_out.get(sweep_url + "/events").status_code == 401


def sweep_form(client: FlaskClient, token: str, body: Any, action: str = "submit") -> Any:
    text = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        "/ui/sweeps/new", data={"sweep": text, "csrf_token": token, "action": action}
    )


def test_new_sweep_form_checks_submits_or_shows_each_problem(
    client: FlaskClient, database: Database
) -> None:
    token = sign_in(client)
    form = client.get("/ui/sweeps/new").get_data(as_text=True)
    prefilled = json.loads(html.unescape(form.split('id="sweep-request"', 1)[1].split(">", 1)[1]
                                         .split("</textarea>", 1)[0]))  # fmt: skip
    assert prefilled == json.loads((ROOT / "examples" / "compare_optimizers.json").read_text())

    checked = sweep_form(client, token, prefilled, action="check")
    page = checked.get_data(as_text=True)
    assert checked.status_code == 200 and "grid, 12 trial(s)" in page and "4451 parameters" in page
    assert "optimizer=sgd(learning_rate=0.01, momentum=0.9) seed=2" in page

    bad = {**prefilled, "space": {**prefilled["space"], "layers[9].units": {"choices": [3, 4]}}}
    bad["max_trials"] = 24
    refused = sweep_form(client, token, bad)
    page = html.unescape(refused.get_data(as_text=True))
    assert refused.status_code == 422
    assert "<code>spec.layers[9].units</code>" in page and "needs 3 output unit(s)" in page
    assert "layers[9].units=4" in page  # the bad trial's values
    assert sweep_form(client, token, "{not json").status_code == 400
    assert client.get("/ui/sweeps").get_data(as_text=True).count("data-sweep-id") == 0

    tpe = {**prefilled, "strategy": "tpe", "max_trials": 5}
    tpe["space"] = {"optimizer.learning_rate": {"low": 0.0001, "high": 0.1, "log": True}}
    page = sweep_form(client, token, tpe, action="check").get_data(as_text=True)
    assert "tpe, 5 trial(s)" in page and "<code>optimizer.learning_rate</code>" in page
    created = sweep_form(client, token, tpe)
    assert created.status_code == 303 and created.headers["Location"].startswith("/ui/sweeps/")
    assert len(advance(database, created.headers["Location"].rsplit("/", 1)[-1])) == 4


def test_the_api_and_both_dashboard_forms_submit_through_one_service_function(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, finished_job: tuple[str, str]
) -> None:
    """POST /v1/sweeps, New sweep and Compare optimizers all call `service.sweeps.submit_sweep`
    (and a check `check_sweep`): one place validates, admits and records a sweep."""
    from service import sweeps
    from tests.conftest import auth

    calls: list[str] = []
    for name in ("submit_sweep", "check_sweep"):
        real = getattr(sweeps, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(sweeps, name, spy)
    token, job_url = finished_job
    body = compare_optimizers(small_spec(epochs=2))
    assert client.post("/v1/sweeps", json=body, headers=auth("alice")).status_code == 202
    assert client.post("/v1/sweeps?dry_run=true", json=body, headers=auth("alice")).is_json
    assert sweep_form(client, token, body, action="check").status_code == 200
    assert sweep_form(client, token, body).status_code == 303
    assert client.post(job_url + "/compare", data={"csrf_token": token}).status_code == 303
    assert calls == ["submit_sweep", "check_sweep", "check_sweep", "submit_sweep", "submit_sweep"]
    over = {**body, "max_trials": 10**6, "strategy": "random"}
    refused = client.post("/v1/sweeps", json=over, headers=auth("alice"))
    assert refused.status_code == 422 and calls[-1] == "submit_sweep"
    assert sweep_form(client, token, over).status_code == 422  # the same error, shown in the form
