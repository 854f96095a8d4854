"""The dashboard without a browser: sign-in, CSRF, the pages, and the cookie-authenticated twins."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete

from core.db import Database
from core.models import ApiKey
from core.settings import Settings
from service.app import create_app
from tests.conftest import KEYS, RecordingQueue
from tests.sse import events as parse_events
from tests.unit.test_api import small_spec
from tests.unit.test_live import PNG_MAGIC
from worker.jobs import run_job

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client: FlaskClient, path: str = "/ui/login") -> str:
    match = TOKEN.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, tenant: str = "alice") -> str:
    """Sign in through the form; the session's CSRF token."""
    response = client.post("/ui/login", data={"api_key": KEYS[tenant], "csrf_token": csrf(client)})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    return csrf(client, "/")


def submit_form(client: FlaskClient, token: str, spec: Any, action: str = "submit") -> Any:
    text = spec if isinstance(spec, str) else json.dumps(spec)
    return client.post("/ui/jobs/new", data={"spec": text, "csrf_token": token, "action": action})


def test_pages_need_sign_in(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/ui/login?next=/")
    assert client.get("/ui/jobs/x/events").status_code == 401
    assert client.get("/ui/jobs/x/plot.png").get_json()["error"]["code"] == "unauthorized"


def test_sign_in_checks_the_key_and_sets_a_strict_http_only_cookie(client: FlaskClient) -> None:
    token = csrf(client)
    bad = client.post("/ui/login", data={"api_key": "wrong", "csrf_token": token})
    assert bad.status_code == 401 and "not valid" in bad.get_data(as_text=True)
    good = client.post("/ui/login", data={"api_key": KEYS["alice"], "csrf_token": token})
    assert good.status_code == 303
    cookie = good.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert KEYS["alice"] not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "alice" in page.get_data(as_text=True)
    assert "Content-Security-Policy" in page.headers


def test_cookie_secure_marks_the_cookie_https_only(settings: Settings) -> None:
    client = create_app(settings, queue=RecordingQueue()).test_client()
    token = csrf(client)
    plain = client.post("/ui/login", data={"api_key": KEYS["alice"], "csrf_token": token})
    assert "Secure" not in plain.headers["Set-Cookie"]
    secure = create_app(settings.with_overrides(cookie_secure=True), queue=RecordingQueue())
    client = secure.test_client()
    token = csrf(client)
    signed = client.post("/ui/login", data={"api_key": KEYS["alice"], "csrf_token": token})
    assert "Secure" in signed.headers["Set-Cookie"]
    assert Settings.from_env({"COOKIE_SECURE": "yes"}).cookie_secure is True


def test_sign_in_redirects_only_within_the_site(client: FlaskClient) -> None:
    token = csrf(client)
    data = {"api_key": KEYS["alice"], "csrf_token": token}
    assert client.post("/ui/login?next=/ui/jobs/new", data=data).headers["Location"] == (
        "/ui/jobs/new"
    )
    token = csrf(client)
    data["csrf_token"] = token
    assert client.post("/ui/login?next=//evil.example", data=data).headers["Location"] == "/"


def test_posts_without_the_csrf_token_are_refused(client: FlaskClient) -> None:
    assert client.post("/ui/login", data={"api_key": KEYS["alice"]}).status_code == 403
    token = sign_in(client)
    assert submit_form(client, "forged", small_spec()).status_code == 403
    response = client.post("/ui/jobs/x/predict", json={"instances": [[0.0]]})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert submit_form(client, token, small_spec()).status_code == 303


def test_submit_form_queues_the_job_or_shows_each_problem(
    client: FlaskClient, queue: RecordingQueue
) -> None:
    token = sign_in(client)
    form = client.get("/ui/jobs/new").get_data(as_text=True)
    assert "seed-example" in form and "sparse_categorical_crossentropy" in form
    names = form.split('id="names"', 1)[1]  # the reference under the editor, from the registries
    for name in ("dense", "batch_norm", "leaky_relu", "swish", "mse", "rmsprop", "he_uniform"):
        assert f"<code>{name}</code>" in names
    bad = small_spec(epochs=0)
    bad["layers"][0]["activation"] = "mish"
    response = submit_form(client, token, bad)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "<code>layers[0].activation</code>" in page and "<code>epochs</code>" in page
    assert submit_form(client, token, "{not json").status_code == 400
    checked = submit_form(client, token, small_spec(), action="check")
    assert checked.status_code == 200 and "4451 parameters" in checked.get_data(as_text=True)
    assert queue.sent == []
    response = submit_form(client, token, small_spec())
    assert response.status_code == 303
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    assert queue.sent == [job_id]
    assert job_id in client.get("/").get_data(as_text=True)
    assert job_id in client.get("/ui/jobs/rows").get_data(as_text=True)


def test_job_page_cancel_predict_and_the_cookie_twins(
    client: FlaskClient, database: Database
) -> None:
    token = sign_in(client)
    queued = submit_form(client, token, small_spec()).headers["Location"]
    page = client.get(queued).get_data(as_text=True)
    assert 'id="cancel-form"' in page and "queued" in page
    cancelled = client.post(queued + "/cancel", data={"csrf_token": token})
    assert cancelled.status_code == 303
    assert "cancelled" in client.get(queued).get_data(as_text=True)

    job_url = submit_form(client, token, small_spec(epochs=3)).headers["Location"]
    job_id = job_url.rsplit("/", 1)[-1]
    assert run_job(database, job_id) == "succeeded"
    page = client.get(job_url).get_data(as_text=True)
    assert 'id="cancel-form"' not in page and 'id="predict" hidden' not in page
    got = [e.event for e in parse_events([client.get(job_url + "/events").get_data(as_text=True)])]
    assert got == ["status", "epoch", "epoch", "epoch"]
    plot = client.get(job_url + "/plot.png")
    assert plot.status_code == 200 and plot.data.startswith(PNG_MAGIC)

    headers = {"X-CSRF-Token": token}
    answer = client.post(job_url + "/predict", json={"instances": [[0.0] * 20]}, headers=headers)
    body = answer.get_json()
    assert answer.status_code == 200, body
    assert body["predictions"][0] in body["classes"] == [0, 1, 2]
    assert abs(sum(body["probabilities"][0]) - 1) < 1e-6
    wrong = client.post(job_url + "/predict", json={"instances": [[0.0] * 3]}, headers=headers)
    assert wrong.status_code == 422
    assert wrong.get_json()["error"]["details"][0]["field"] == "instances[0]"


def test_other_tenants_jobs_are_not_found(client: FlaskClient, app: Flask) -> None:
    token = sign_in(client, "bob")
    bobs = submit_form(client, token, small_spec()).headers["Location"]
    alice = app.test_client()
    sign_in(alice, "alice")
    assert alice.get(bobs).status_code == 404
    assert alice.get(bobs + "/events").status_code == 404
    assert alice.get(bobs + "/plot.png").status_code == 404
    assert bobs.rsplit("/", 1)[-1] not in alice.get("/").get_data(as_text=True)


def test_the_cookie_does_not_open_the_api(client: FlaskClient) -> None:
    sign_in(client)
    assert client.get("/v1/jobs").status_code == 401


def test_revoking_the_key_ends_the_session(client: FlaskClient, app: Flask) -> None:
    sign_in(client)
    with app.extensions["trainsvc.db"].begin() as session:
        session.execute(delete(ApiKey))
    app.extensions["trainsvc.keys"]._items.clear()
    assert client.get("/").status_code == 302


def test_sign_out(client: FlaskClient) -> None:
    token = sign_in(client)
    assert client.post("/ui/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 302


def test_job_page_shows_the_evaluation_with_the_original_labels(
    client: FlaskClient, database: Database
) -> None:
    token = sign_in(client)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(80, 3))
    y = np.array(["low", "mid", "high"])[np.digitize(X[:, 0], [-0.4, 0.4])]
    spec = {
        "dataset": {"inline": {"X": X.tolist(), "y": y.tolist()}},
        "layers": [
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
        "loss": "sparse_categorical_crossentropy",
        "epochs": 3,
    }
    job_url = submit_form(client, token, spec).headers["Location"]
    assert run_job(database, job_url.rsplit("/", 1)[-1]) == "succeeded"
    page = client.get(job_url).get_data(as_text=True)
    assert 'id="evaluation"' in page and 'id="confusion-matrix"' in page
    matrix = page.split('id="confusion-matrix"')[1].split("</table>")[0]
    # Classes in sorted order (as the model stores them), as both headers of the heat map.
    assert re.findall(r'<th class="num">(\w+)</th>', matrix) == ["high", "low", "mid"]
    assert re.findall(r"<tr><th>(\w+)</th>", matrix) == ["high", "low", "mid"]
    counts = [
        int(n) for n in re.findall(r'class="num heat-\d[^"]*"\s+title="[^"]*">(\d+)<', matrix)
    ]
    assert len(counts) == 9 and sum(counts) == 16  # 80 rows, test_size 0.2
    assert "heat-9" in matrix  # the largest cell is the darkest
    plot = client.get(job_url + "/evaluation.png")
    assert plot.status_code == 200 and plot.data.startswith(PNG_MAGIC)


def test_job_page_shows_a_regression_evaluation(client: FlaskClient, database: Database) -> None:
    token = sign_in(client)
    spec = small_spec(
        dataset={"builtin": "make_regression", "params": {"n_samples": 100, "n_features": 4}},
        layers=[{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "units": 1}],
        loss="mse",
    )
    job_url = submit_form(client, token, spec).headers["Location"]
    assert run_job(database, job_url.rsplit("/", 1)[-1]) == "succeeded"
    page = client.get(job_url).get_data(as_text=True)
    assert 'id="residuals"' in page and 'data-evaluation="rmse"' in page
    assert 'id="confusion-matrix"' not in page
    plot = client.get(job_url + "/evaluation.png")
    assert plot.status_code == 200 and plot.data.startswith(PNG_MAGIC)
