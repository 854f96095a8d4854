"""No request stalls the service or answers 5xx: deep or huge JSON, query strings that only look
like numbers, NUL and over-long strings, numbers as strings, predictions that overflow. Each is a
clear 4xx, alike on SQLite and PostgreSQL (which refuses NUL in text and over-long strings)."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from core.db import Database
from core.models import UiSession
from core.settings import Settings
from service import jsonutil
from service.app import create_app
from service.jsonutil import MAX_JSON_DEPTH, json_depth
from tests.conftest import KEYS, RecordingQueue, api_settings, auth
from tests.support import redis_url, scratch_database
from tests.unit.test_api import assert_error, small_spec, submit, trained_model
from tests.unit.test_dashboard import csrf, sign_in, submit_form
from worker.jobs import run_job

ALICE = auth("alice")
JSON = {**ALICE, "Content-Type": "application/json"}
DEEP = "[" * 1000 + "]" * 1000
LONG_NUMBER = "7" * 4301  # one digit past Python's int-string conversion limit
LONG_ID = "x" * 37  # one past the longest id
CSV = b"a,y\n1,0\n2,1\n3,0\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """The API's settings on each database (the `app`, `client` and `database` fixtures follow)."""
    with ExitStack() as cleanup:
        url = scratch_database(request.param, tmp_path, cleanup)
        if url is None:
            pytest.skip("PostgreSQL does not answer")
        yield api_settings(url, tmp_path)


def nested(depth: int) -> str:
    """A JSON spec whose name is a list nested `depth` deep (the spec itself adds one level)."""
    return '{"name": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def plain_depth(text: str) -> int:
    """The depth json_depth reports, by a byte-at-a-time loop (a quote after an odd run of
    backslashes is escaped, in strings or out)."""
    depth = deepest = 0
    inside = escaped = False
    for char in text:
        was_escaped, escaped = escaped, char == "\\" and not escaped
        if char == '"' and not was_escaped:
            inside = not inside
        elif not inside and char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif not inside and char in "]}":
            depth -= 1
    return deepest


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [1, {"b": "[[[["}]}', 3),
        ('["\\"[[", [[]]]', 3),
        ('["\\\\", [[]]]', 3),  # an escaped backslash does not escape the quote after it
        ('"unterminated [[[', 0),
        ("[" * 100, 100),
    ],
)
def test_json_depth_skips_strings_and_escapes(text: str, depth: int) -> None:
    assert json_depth(text.encode()) == depth


def test_json_depth_agrees_with_a_plain_loop_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    texts = [
        "".join(rng.choice('[]{}"\\a,') for _ in range(rng.randint(0, 50))) for _ in range(500)
    ]
    for chunk in (1, 3, 1 << 20):
        monkeypatch.setattr(jsonutil, "_CHUNK", chunk)
        for text in texts:
            assert json_depth(text.encode()) == plain_depth(text), (chunk, text)


def test_json_depth_is_linear_on_texts_that_make_regular_expressions_backtrack() -> None:
    started = time.monotonic()
    for text in (b'"' + b'\\"' * 4_000_000, b'"' * 8_000_000, b"[]" * 4_000_000):
        assert json_depth(text, stop=MAX_JSON_DEPTH) <= 1
    assert time.monotonic() - started < 10  # about half a second here; quadratic is hours


def test_json_nested_too_deep_is_400_before_parsing(client: FlaskClient) -> None:
    for path in ("/v1/jobs", "/v1/jobs?dry_run=true", "/v1/models/nope/predict"):
        error = assert_error(client.post(path, data=DEEP, headers=JSON), 400, "bad_request")
        assert f"more than {MAX_JSON_DEPTH} deep" in error["message"]
    deepest = client.post("/v1/jobs?dry_run=true", data=nested(MAX_JSON_DEPTH), headers=JSON)
    assert_error(deepest, 422, "invalid_spec")  # parsed: the limit itself is allowed
    too_deep = client.post("/v1/jobs?dry_run=true", data=nested(MAX_JSON_DEPTH + 1), headers=JSON)
    assert_error(too_deep, 400, "bad_request")


def test_a_number_past_the_conversion_limit_is_400(client: FlaskClient) -> None:
    body = '{"epochs": ' + LONG_NUMBER + "}"
    error = assert_error(client.post("/v1/jobs", data=body, headers=JSON), 400, "bad_request")
    assert "4300 digits" in error["message"]
    error = assert_error(client.post("/v1/jobs", data="{x", headers=JSON), 400, "bad_request")
    assert "line 1, column 2" in error["message"]


def test_the_dashboard_refuses_deep_and_huge_json_in_its_forms(
    client: FlaskClient, database: Database
) -> None:
    token = sign_in(client)
    for text, says in ((DEEP, f"more than {MAX_JSON_DEPTH} deep"), (LONG_NUMBER, "4300 digits")):
        page = submit_form(client, token, text)
        assert page.status_code == 400 and says in page.get_data(as_text=True)
    job_url = submit_form(client, token, small_spec()).headers["Location"]
    assert run_job(database, job_url.rsplit("/", 1)[-1]) == "succeeded"
    headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
    for body in (DEEP, '{"instances": [[' + LONG_NUMBER + "]]}"):
        answer = client.post(job_url + "/predict", data=body, headers=headers)
        assert_error(answer, 400, "bad_request")
    assert_error(
        client.post(job_url + "/predict", data="x", headers={"X-CSRF-Token": token}),
        400,
        "bad_request",
    )


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/jobs?limit=²", "limit"),  # isdigit() says yes, int() says no
        ("/v1/jobs?limit=1_0", "limit"),
        ("/v1/jobs?limit=%205", "limit"),
        ("/v1/jobs?limit=-1", "limit"),
        ("/v1/jobs?limit=101", "limit"),
        ("/v1/jobs?limit=" + "9" * 40, "limit"),
        ("/v1/jobs?cursor=a%00b", "cursor"),
        ("/v1/jobs?cursor=" + LONG_ID, "cursor"),
        ("/v1/jobs?status=queued%00", "status"),
        ("/v1/jobs?status=weird", "status"),
        ("/v1/datasets?limit=²", "limit"),
        ("/v1/datasets?cursor=a%00b", "cursor"),
    ],
)
def test_a_bad_query_parameter_is_422_naming_it(client: FlaskClient, path: str, field: str) -> None:
    error = assert_error(client.get(path, headers=ALICE), 422, "validation_error")
    assert [d["field"] for d in error["details"]] == [field]


def test_query_parameters_that_are_fine(client: FlaskClient) -> None:
    for path in ("/v1/jobs?limit=05", "/v1/jobs?status=&cursor=&limit=", "/v1/datasets?limit=100"):
        assert client.get(path, headers=ALICE).status_code == 200, path


def test_flags_and_epochs_are_checked_too(client: FlaskClient) -> None:
    dry = client.post("/v1/jobs?dry_run=maybe", json=small_spec(), headers=ALICE)
    assert assert_error(dry, 422, "validation_error")["details"][0]["field"] == "dry_run"
    assert client.post("/v1/jobs?dry_run=YES", json=small_spec(), headers=ALICE).status_code == 200
    job = submit(client, small_spec()).get_json()["id"]
    for after in ("²", "1000000000", "-1"):
        response = client.get(f"/v1/jobs/{job}/events?after={after}", headers=ALICE)
        assert assert_error(response, 422, "validation_error")["details"][0]["field"] == "after"


@pytest.mark.parametrize("bad_id", ["a%00b", LONG_ID])
def test_a_path_id_with_a_nul_or_too_long_is_422(client: FlaskClient, bad_id: str) -> None:
    for method, path in (
        ("GET", "/v1/jobs/{}"),
        ("GET", "/v1/jobs/{}/metrics"),
        ("GET", "/v1/jobs/{}/plot.png"),
        ("GET", "/v1/jobs/{}/events"),
        ("POST", "/v1/jobs/{}/cancel"),
        ("GET", "/v1/models/{}"),
        ("POST", "/v1/models/{}/predict"),
        ("GET", "/v1/datasets/{}"),
    ):
        response = client.open(path.format(bad_id), method=method, headers=ALICE)
        error = assert_error(response, 422, "validation_error")
        assert error["details"][0]["field"].endswith("_id"), (method, path)
    sign_in(client)
    assert client.get(f"/ui/jobs/{bad_id}").status_code == 422


def test_a_bad_idempotency_key_is_422(client: FlaskClient) -> None:
    for key in ("order\x0042", "k" * 201):
        response = client.post(
            "/v1/jobs", json=small_spec(), headers={**ALICE, "Idempotency-Key": key}
        )
        error = assert_error(response, 422, "validation_error")
        assert error["details"][0]["field"] == "Idempotency-Key"
    fine = client.post(
        "/v1/jobs", json=small_spec(), headers={**ALICE, "Idempotency-Key": "k" * 200}
    )
    assert fine.status_code == 202


@pytest.mark.parametrize(
    ("query", "form", "field"),
    [
        ("label=y%00", None, "label"),
        ("label=" + "y" * 201, None, "label"),
        ("label=y&name=a%00", None, "name"),
        ("label=y&name=" + "n" * 201, None, "name"),
        ("", {"label": "y\x00"}, "label"),
        ("", {"label": "y", "name": "n" * 201}, "name"),
        ("", {"label": "y", "filename": "a\x00.csv"}, "name"),
    ],
)
def test_dataset_names_and_labels_with_a_nul_or_too_long_are_422(
    client: FlaskClient, query: str, form: dict[str, str] | None, field: str
) -> None:
    if form is None:
        headers = {**ALICE, "Content-Type": "text/csv"}
        response = client.post(f"/v1/datasets?{query}", data=CSV, headers=headers)
    else:
        fields: dict[str, Any] = {k: v for k, v in form.items() if k != "filename"}
        fields["file"] = (io.BytesIO(CSV), form.get("filename", "a.csv"))
        response = client.post("/v1/datasets", data=fields, headers=ALICE)
    error = assert_error(response, 422, "invalid_dataset")
    assert [d["field"] for d in error["details"]] == [field]


def test_a_label_column_named_past_200_characters_is_422(client: FlaskClient) -> None:
    label = "y" * 250
    csv = f"a,{label}\n1,0\n2,1\n3,0\n".encode()
    headers = {**ALICE, "Content-Type": "text/csv"}
    response = client.post(f"/v1/datasets?label={label}", data=csv, headers=headers)
    assert assert_error(response, 422, "invalid_dataset")["details"][0]["field"] == "label"


def test_a_spec_naming_a_dataset_with_a_nul_is_422(client: FlaskClient) -> None:
    spec = small_spec(dataset={"dataset_id": "a\x00b"})
    error = assert_error(client.post("/v1/jobs", json=spec, headers=ALICE), 422, "invalid_spec")
    assert "NUL" in error["details"][0]["message"]


@pytest.mark.parametrize(
    ("value", "kind"), [("0.5", "a string"), (True, "a boolean"), (10**400, "too large a number")]
)
def test_predict_takes_only_json_numbers(
    client: FlaskClient, database: Database, value: Any, kind: str
) -> None:
    model_id = trained_model(client, database, small_spec())
    row = [0.5] * 19 + [value]
    response = client.post(
        f"/v1/models/{model_id}/predict", json={"instances": [row]}, headers=ALICE
    )
    error = assert_error(response, 422, "validation_error")
    assert error["details"][0]["field"] == "instances[0][19]", kind


def test_rows_whose_outputs_are_not_finite_are_422_naming_them(
    client: FlaskClient, database: Database
) -> None:
    model_id = trained_model(client, database, small_spec())
    rows = [[0.5] * 20, [1e308] * 20, [0.5] * 20, [-1e308] + [0.5] * 19]
    predict = f"/v1/models/{model_id}/predict"
    error = assert_error(
        client.post(predict, json={"instances": rows}, headers=ALICE), 422, "validation_error"
    )
    assert [d["field"] for d in error["details"]] == ["instances[1]", "instances[3]"]
    assert "not finite" in error["message"]
    fine = client.post(predict, json={"instances": rows[::2]}, headers=ALICE).get_json()
    assert len(fine["predictions"]) == 2 and None not in fine["probabilities"][0]


def test_signing_out_ends_the_session_on_the_server(client: FlaskClient, app: Flask) -> None:
    token = sign_in(client)
    cookie = client.get_cookie("trainsvc_session")
    assert cookie is not None and client.get("/").status_code == 200
    assert client.post("/ui/logout", data={"csrf_token": token}).status_code == 303
    client.set_cookie("trainsvc_session", cookie.value)  # the old cookie, replayed
    assert client.get("/").status_code == 302
    assert client.get("/ui/jobs/x/events").status_code == 401
    with app.extensions["trainsvc.db"].begin() as session:
        assert session.scalars(select(UiSession)).all() == []


def test_a_session_ends_when_it_expires(client: FlaskClient, app: Flask) -> None:
    sign_in(client)
    with app.extensions["trainsvc.db"].begin() as session:
        session.execute(update(UiSession).values(expires_at=UiSession.created_at))
    assert client.get("/").status_code == 302
    other = app.test_client()
    sign_in(other)  # a sign-in clears away the expired sessions
    with app.extensions["trainsvc.db"].begin() as session:
        assert len(session.scalars(select(UiSession)).all()) == 1


def throttled_app(settings: Settings, limiter: str, **changes: Any) -> Flask:
    """The API allowing 3 failed authentications a minute per address, counted by `limiter`."""
    broker = "memory://" if limiter == "memory" else redis_url()
    if broker is None:
        pytest.skip("no Redis answering")
    changes = {"auth_failures_per_minute": 3, "broker_url": broker, **changes}
    return create_app(settings.with_overrides(**changes), queue=RecordingQueue())


def within_one_minute(seconds: float) -> None:
    """Wait for the next minute if fewer than `seconds` are left of this one: the limits count
    per minute, and a count that starts again midway would fail the test for nothing."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)


def address() -> str:
    """A client address no other test (or test run sharing this Redis) uses."""
    return f"2001:db8::{random.getrandbits(16):x}:{random.getrandbits(16):x}"


@pytest.mark.parametrize("limiter", ["memory", "redis"])
def test_wrong_api_keys_are_throttled_per_client_address(settings: Settings, limiter: str) -> None:
    client = throttled_app(settings, limiter).test_client()
    mine, other = {"REMOTE_ADDR": address()}, {"REMOTE_ADDR": address()}
    wrong = {"Authorization": "Bearer guess"}
    # Alice's key is known to this process from here on (checked with the address's failures in
    # one round trip to Redis): it must be refused all the same below.
    assert client.get("/v1/jobs", headers=ALICE, environ_base=other).status_code == 200
    for _ in range(5):  # a missing key is no guess: not counted
        assert client.get("/v1/jobs", environ_base=mine).status_code == 401
    for _ in range(3):
        assert client.get("/v1/jobs", headers=wrong, environ_base=mine).status_code == 401
    limited = client.get("/v1/jobs", headers=wrong, environ_base=mine)
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Once limited, a right key answers as a wrong one does (no way to tell a lucky guess).
    assert client.get("/v1/jobs", headers=ALICE, environ_base=mine).status_code == 429
    assert client.get("/v1/jobs", headers=ALICE, environ_base=other).status_code == 200


@pytest.mark.parametrize("limiter", ["memory", "redis"])
def test_failed_dashboard_sign_ins_are_throttled(settings: Settings, limiter: str) -> None:
    client = throttled_app(settings, limiter).test_client()
    mine = {"REMOTE_ADDR": address()}
    for status in (401, 401, 401, 429):
        form = {"api_key": "guess", "csrf_token": csrf(client)}
        assert client.post("/ui/login", data=form, environ_base=mine).status_code == status
    form = {"api_key": KEYS["alice"], "csrf_token": csrf(client)}
    refused = client.post("/ui/login", data=form, environ_base=mine)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "too many failed" in refused.get_data(as_text=True)


def test_a_wrong_metrics_token_is_a_failed_authentication(settings: Settings) -> None:
    client = throttled_app(settings, "memory", metrics_token="t0ken").test_client()
    mine = {"REMOTE_ADDR": address()}
    for status in (401, 401, 401, 429):
        wrong = client.get("/metrics", headers={"Authorization": "Bearer x"}, environ_base=mine)
        assert wrong.status_code == status
    right = client.get("/metrics", headers={"Authorization": "Bearer t0ken"}, environ_base=mine)
    assert right.status_code == 429


def test_the_client_address_comes_from_trusted_proxies_only(settings: Settings) -> None:
    wrong = {"Authorization": "Bearer guess"}
    direct = throttled_app(settings, "memory").test_client()
    for _ in range(4):  # X-Forwarded-For is anyone's to send: ignored, all from one address
        direct.get("/v1/jobs", headers={**wrong, "X-Forwarded-For": address()})
    assert direct.get("/v1/jobs", headers=ALICE).status_code == 429
    proxied = throttled_app(settings, "memory", trusted_proxies=1).test_client()
    behind = {"X-Forwarded-For": address()}
    for _ in range(4):
        proxied.get("/v1/jobs", headers={**wrong, **behind})
    assert proxied.get("/v1/jobs", headers={**ALICE, **behind}).status_code == 429
    fresh = {"X-Forwarded-For": address()}
    assert proxied.get("/v1/jobs", headers={**ALICE, **fresh}).status_code == 200


def test_an_address_throttled_by_another_process_is_refused_its_known_keys(
    settings: Settings,
) -> None:
    """Two API processes on one Redis: the one that knows Alice's key trusts her address as clean
    for AUTH_CLEAN_SECONDS only; once the other has throttled the address, she is refused."""
    serving = throttled_app(settings, "redis", auth_clean_seconds=0.3).test_client()
    within_one_minute(5)
    guessing = throttled_app(settings, "redis", auth_clean_seconds=0.3).test_client()
    mine = {"REMOTE_ADDR": address()}
    for _ in range(3):  # known, and the address read as clean
        assert serving.get("/v1/jobs", headers=ALICE, environ_base=mine).status_code == 200
    for status in (401, 401, 401, 429):
        wrong = {"Authorization": "Bearer guess"}
        assert guessing.get("/v1/jobs", headers=wrong, environ_base=mine).status_code == status
    time.sleep(0.35)
    refused = serving.get("/v1/jobs", headers=ALICE, environ_base=mine)
    assert_error(refused, 429, "rate_limited")
    assert "failed authentications" in refused.get_json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_a_key_over_its_redis_counted_limit_gets_the_same_429(settings: Settings) -> None:
    """Leased counting answers as before: the limit's requests, then 429 with Retry-After."""
    from service.auth import ensure_api_key, new_key

    app = throttled_app(settings, "redis", rate_limit_per_minute=5)
    key = new_key()  # its own count in the shared Redis
    with app.extensions["trainsvc.db"].begin() as session:
        ensure_api_key(session, "alice", key)
    client = app.test_client()
    mine = {"Authorization": f"Bearer {key}"}
    within_one_minute(5)
    statuses = [client.get("/v1/jobs", headers=mine).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    limited = client.get("/v1/jobs", headers=mine)
    assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
