"""Every answer /openapi.json documents, given once, and each JSON body valid against the schema
the document names for its path, method and status (so a body and its document cannot drift).
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from werkzeug.test import TestResponse

from core.db import Database
from core.models import Model
from service.openapi import openapi_document
from service.predictions import ModelCache
from tests.conftest import RecordingQueue, auth
from tests.sse import events as parse_events
from tests.unit.test_api import small_spec
from worker.jobs import run_job
from worker.sweeps import advance

ALICE = auth("alice")
DOC: dict[str, Any] = openapi_document()
REGRESSION = {
    "dataset": {"builtin": "make_regression", "params": {"n_samples": 200, "n_features": 5}},
    "layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 1}],
    "loss": "mse",
}
CSV = b"a,b,y\n1,2,0\n3,4,1\n5,6,1\n"


def validator(schema: dict[str, Any]) -> Any:
    """A JSON Schema 2020-12 validator whose `$ref`s resolve into the document's components."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": DOC["components"]})


def component(name: str) -> Any:
    return validator({"$ref": f"#/components/schemas/{name}"})


def check(schema_validator: Any, body: Any, where: str) -> None:
    problems = [str(e) for e in schema_validator.iter_errors(body)]
    assert not problems, f"{where}: the body does not match the document:\n" + "\n".join(problems)


def documented() -> set[tuple[str, str, str]]:
    """Every (path, method, status) the document gives an answer for."""
    return {
        (path, method, status)
        for path, operations in DOC["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }


class Refuse:
    """A rate limiter that has no room left for anyone."""

    def hit(self, key: str) -> float:
        return 30.0


class Api:
    """The test client, checking every answer against the document and noting which it gave."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.seen: set[tuple[str, str, str]] = set()

    def call(
        self,
        method: str,
        template: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        query: str = "",
        **kwargs: Any,
    ) -> TestResponse:
        """Send `method template` (path parameters from `kwargs`); expect `status`; check it."""
        parameters = DOC["paths"][template][method].get("parameters", [])
        path = template.format(
            **{p["name"]: kwargs.pop(p["name"]) for p in parameters if p["in"] == "path"}
        )
        response = self.client.open(
            path + query,
            method=method.upper(),
            headers=ALICE if headers is None else headers,
            **kwargs,
        )
        where = f"{method.upper()} {path}{query} → {response.status_code}"
        assert response.status_code == status, f"{where}: {response.get_data(as_text=True)}"
        answers = DOC["paths"][template][method]["responses"]
        assert str(status) in answers, f"{where}: the document has no {status} for it"
        content = answers[str(status)].get("content")
        if content is None:
            assert response.data == b"", where
        elif response.mimetype == "application/json":
            check(validator(content["application/json"]["schema"]), response.get_json(), where)
        else:
            assert response.mimetype in content, where
        self.seen.add((template, method, str(status)))
        return response


def events_unavailable(api: Api, app: Flask, job_id: str) -> None:
    """A stream asked for while the hub cannot read the database answers 503."""
    hub = app.extensions["trainsvc.events"]
    readable = hub.db
    hub.db = Database("postgresql://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    try:
        api.call("get", "/v1/jobs/{job_id}/events", 503, job_id=job_id)
    finally:
        hub.db = readable


def database_unavailable(api: Api, app: Flask) -> None:
    """Every route that needs the database answers 503 (JSON, Retry-After) while it is down."""
    readable, hub = app.extensions["trainsvc.db"], app.extensions["trainsvc.events"]
    hub_readable = hub.db
    app.extensions["trainsvc.db"] = hub.db = Database("postgresql://nobody@127.0.0.1:1/none")
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("/v1/jobs", "post"): {"json": small_spec()},
        ("/v1/models/{model_id}/predict", "post"): {"json": {"instances": [[0.5] * 5]}},
        ("/v1/datasets", "post"): {"query": "?label=y", "data": CSV, "content_type": "text/csv"},
        ("/v1/registered-models", "post"): {"json": {"name": "down"}},
        ("/v1/registered-models/{name}", "patch"): {"json": {"description": "e"}},
        ("/v1/registered-models/{name}/aliases/{alias}", "put"): {"json": {"version": 1}},
        ("/v1/registered-models/{name}/versions", "post"): {"json": {"model_id": "nope"}},
        ("/v1/registered-models/{name}/versions/{version}/predict", "post"): {
            "json": {"instances": [[0.5] * 20]}
        },
        ("/v1/registered-models/{name}@{alias}/predict", "post"): {
            "json": {"instances": [[0.5] * 20]}
        },
        ("/v1/sweeps", "post"): {
            "json": {
                "spec": small_spec(),
                "space": {"optimizer": {"choices": ["sgd", "adam"]}},
                "strategy": "grid",
                "objective": {"metric": "loss"},
            }
        },
    }
    path_values = {"version": 1, "alias": "production"}
    try:
        for path, method, status in sorted(documented()):
            if status != "503" or not path.startswith("/v1/"):
                continue
            parameters = DOC["paths"][path][method].get("parameters", [])
            ids: dict[str, Any] = {
                p["name"]: path_values.get(p["name"], "nope")
                for p in parameters
                if p["in"] == "path"
            }
            response = api.call(method, path, 503, **ids, **bodies.get((path, method), {}))
            assert response.headers.get("Retry-After"), path
    finally:
        app.extensions["trainsvc.db"], hub.db = readable, hub_readable


def jobs(api: Api, database: Database) -> None:
    """/v1/jobs and a job's own routes: every success and every documented refusal."""
    spec = small_spec()
    api.call("post", "/v1/jobs", 200, query="?dry_run=true", json=spec)
    api.call("post", "/v1/jobs", 400, data="{not json", content_type="application/json")
    api.call("post", "/v1/jobs", 413, json={"pad": "x" * (2 * 1024 * 1024)})
    api.call("post", "/v1/jobs", 415, data="a=b", content_type="text/plain")
    api.call("post", "/v1/jobs", 422, json=small_spec(loss="hinge"))
    queued = api.call("post", "/v1/jobs", 202, json=spec).get_json()["id"]
    api.call("get", "/v1/jobs", 200, query="?limit=1")
    api.call("get", "/v1/jobs", 422, query="?status=weird")
    api.call("post", "/v1/jobs/{job_id}/cancel", 202, job_id=queued)
    api.call("post", "/v1/jobs/{job_id}/cancel", 409, job_id=queued)
    done = api.call("post", "/v1/jobs", 202, json=spec).get_json()["id"]
    assert run_job(database, done) == "succeeded"
    for template in ("/v1/jobs/{job_id}", "/v1/jobs/{job_id}/metrics"):
        api.call("get", template, 200, job_id=done)
    for template in (
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/metrics",
        "/v1/jobs/{job_id}/plot.png",
        "/v1/jobs/{job_id}/events",
    ):
        api.call("get", template, 404, job_id="nope")
        api.call("get", template, 422, job_id="no%00pe")  # a NUL: never sent to the database
    api.call("post", "/v1/jobs/{job_id}/cancel", 404, job_id="nope")
    api.call("post", "/v1/jobs/{job_id}/cancel", 422, job_id="x" * 37)  # longer than any id
    etag = api.call("get", "/v1/jobs/{job_id}/plot.png", 200, job_id=done).headers["ETag"]
    unchanged = {**ALICE, "If-None-Match": etag}
    api.call("get", "/v1/jobs/{job_id}/plot.png", 304, job_id=done, headers=unchanged)
    api.call("get", "/v1/jobs/{job_id}/events", 422, job_id=done, query="?after=x")
    stream = api.call("get", "/v1/jobs/{job_id}/events", 200, job_id=done)
    got = list(parse_events([stream.get_data(as_text=True)]))
    schemas = {"status": component("JobOut"), "epoch": component("Epoch")}
    assert [e.event for e in got] == ["status", "epoch", "epoch"]
    for event in got:
        check(schemas[event.event], event.data, f"event {event.event} of job {done}")


def models(api: Api, app: Flask, client: FlaskClient, database: Database) -> None:
    """A classification and a regression model: metadata, predictions and every refusal."""
    for spec, width in ((small_spec(), 20), (small_spec(**REGRESSION), 5)):
        job = client.post("/v1/jobs", json=spec, headers=ALICE).get_json()["id"]
        assert run_job(database, job) == "succeeded"
        model_id = client.get(f"/v1/jobs/{job}", headers=ALICE).get_json()["model_id"]
        api.call("get", "/v1/models/{model_id}", 200, model_id=model_id)
        predict = "/v1/models/{model_id}/predict"
        api.call("post", predict, 200, model_id=model_id, json={"instances": [[0.5] * width]})
    api.call("get", "/v1/models/{model_id}", 404, model_id="nope")
    api.call("get", "/v1/models/{model_id}", 422, model_id="no%00pe")
    api.call("post", predict, 404, model_id="nope", json={"instances": [[0.5] * 5]})
    api.call("post", predict, 400, model_id=model_id, data="{", content_type="application/json")
    api.call("post", predict, 413, model_id=model_id, json={"pad": "x" * (2 * 1024 * 1024)})
    api.call("post", predict, 415, model_id=model_id, data="x", content_type="text/plain")
    api.call("post", predict, 422, model_id=model_id, json={"instances": [[0.5] * 3]})
    with database.begin() as session:
        session.execute(update(Model).where(Model.id == model_id).values(weights=b"garbage"))
    app.extensions["trainsvc.models"] = ModelCache(8)  # forget the model loaded before
    api.call("post", predict, 500, model_id=model_id, json={"instances": [[0.5] * 5]})


def evaluation_and_export(api: Api, client: FlaskClient, database: Database) -> None:
    """A model's evaluation plot and its export (ONNX, npz), and every documented refusal."""
    for spec in (small_spec(), small_spec(**REGRESSION)):
        job = client.post("/v1/jobs", json=spec, headers=ALICE).get_json()["id"]
        assert run_job(database, job) == "succeeded"
        model_id = client.get(f"/v1/jobs/{job}", headers=ALICE).get_json()["model_id"]
        plot = "/v1/models/{model_id}/evaluation.png"
        etag = api.call("get", plot, 200, model_id=model_id).headers["ETag"]
        api.call("get", plot, 304, model_id=model_id, headers={**ALICE, "If-None-Match": etag})
        export = "/v1/models/{model_id}/export"
        for fmt in ("onnx", "npz"):
            api.call("get", export, 200, model_id=model_id, query=f"?format={fmt}")
    api.call("get", plot, 404, model_id="nope")
    api.call("get", plot, 422, model_id="no%00pe")
    api.call("get", export, 404, model_id="nope")
    api.call("get", export, 422, model_id=model_id, query="?format=pickle")
    with database.begin() as session:
        session.execute(update(Model).where(Model.id == model_id).values(weights=b"garbage"))
    api.call("get", export, 500, model_id=model_id, query="?format=onnx")


def datasets(api: Api) -> None:
    """Upload, list and read a CSV dataset, and every documented refusal."""
    upload: dict[str, Any] = {"content_type": "text/csv", "data": CSV}
    dataset = api.call("post", "/v1/datasets", 201, query="?label=y", **upload).get_json()
    api.call("post", "/v1/datasets", 422, query="?label=nope", **upload)
    api.call("post", "/v1/datasets", 415, query="?label=y", json={"a": 1})
    big: dict[str, Any] = {"content_type": "text/csv", "data": CSV + b"1,2,0\n" * 400_000}
    api.call("post", "/v1/datasets", 413, query="?label=y", **big)
    api.call("get", "/v1/datasets", 200)
    api.call("get", "/v1/datasets", 422, query="?limit=0")
    api.call("get", "/v1/datasets/{dataset_id}", 200, dataset_id=dataset["id"])
    api.call("get", "/v1/datasets/{dataset_id}", 404, dataset_id="nope")
    api.call("get", "/v1/datasets/{dataset_id}", 422, dataset_id="x" * 37)


def registry(api: Api, app: Flask, client: FlaskClient, database: Database) -> None:
    """The model registry: every route's success and documented refusals."""
    job = client.post("/v1/jobs", json=small_spec(), headers=ALICE).get_json()["id"]
    assert run_job(database, job) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job}", headers=ALICE).get_json()["model_id"]
    models = "/v1/registered-models"
    one, versions = models + "/{name}", models + "/{name}/versions"
    version, alias = versions + "/{version}", one + "/aliases/{alias}"
    by_alias, by_version = models + "/{name}@{alias}/predict", version + "/predict"
    row = {"instances": [[0.5] * 20]}
    api.call("post", models, 201, json={"name": "doc", "description": "d"})
    api.call("post", models, 409, json={"name": "doc"})
    api.call("post", models, 422, json={"name": "a/b"})
    api.call("get", models, 200)
    api.call("get", models, 422, query="?limit=0")
    api.call("get", one, 200, name="doc")
    api.call("patch", one, 200, name="doc", json={"description": "e"})
    api.call("patch", one, 404, name="nope", json={"description": "e"})
    api.call("post", versions, 201, name="doc", json={"model_id": model_id})
    api.call("post", versions, 201, name="doc", json={"model_id": model_id})
    api.call("post", versions, 404, name="doc", json={"model_id": "nope"})
    api.call("get", versions, 200, name="doc")
    api.call("get", version, 200, name="doc", version=1)
    api.call("put", alias, 200, name="doc", alias="production", json={"version": 1})
    api.call("put", alias, 404, name="nope", alias="production", json={"version": 1})
    api.call("post", by_alias, 200, name="doc", alias="production", json=row)
    api.call("post", by_alias, 404, name="doc", alias="staging", json=row)
    api.call("post", by_version, 200, name="doc", version=2, json=row)
    api.call("post", by_version, 404, name="doc", version=9, json=row)
    # Every route that takes a body: unreadable, too large, not JSON, not valid.
    for method, template, names, invalid in (
        ("post", models, {}, {"name": ""}),
        ("patch", one, {"name": "doc"}, {"description": 5}),
        ("post", versions, {"name": "doc"}, {}),
        ("put", alias, {"name": "doc", "alias": "production"}, {"version": 9}),
        ("post", by_alias, {"name": "doc", "alias": "production"}, {"instances": [[1]]}),
        ("post", by_version, {"name": "doc", "version": 2}, {"instances": []}),
    ):
        api.call(method, template, 400, data="{", content_type="application/json", **names)
        api.call(method, template, 413, json={"pad": "x" * (2 * 1024 * 1024)}, **names)
        api.call(method, template, 415, data="x", content_type="text/plain", **names)
        api.call(method, template, 422, json=invalid, **names)
    # Every route that names a model: a name no model could have is a 422, an unknown one a 404.
    named: list[tuple[str, str, dict[str, Any]]] = [
        ("get", one, {}),
        ("delete", one, {}),
        ("get", versions, {}),
        ("get", version, {"version": 1}),
        ("delete", version, {"version": 1}),
        ("delete", alias, {"alias": "production"}),
        ("get", one + "/history", {}),
    ]
    for method, template, names in named:
        api.call(method, template, 422, name="x" * 300, **names)
        api.call(method, template, 404, name="nope", **names)
    api.call("get", one + "/history", 200, name="doc")
    api.call("delete", version, 409, name="doc", version=1)
    api.call("delete", version, 204, name="doc", version=2)
    api.call("delete", alias, 204, name="doc", alias="production")
    api.call("put", alias, 200, name="doc", alias="production", json={"version": 1})
    api.call("post", models, 201, json={"name": "gone"})
    api.call("delete", one, 204, name="gone")
    # A stored model that cannot be read: 500 by name as by id.
    api.call("post", models, 201, json={"name": "broken"})
    job = client.post("/v1/jobs", json=small_spec(), headers=ALICE).get_json()["id"]
    assert run_job(database, job) == "succeeded"
    broken = client.get(f"/v1/jobs/{job}", headers=ALICE).get_json()["model_id"]
    api.call("post", versions, 201, name="broken", json={"model_id": broken})
    api.call("put", alias, 200, name="broken", alias="production", json={"version": 1})
    with database.begin() as session:
        session.execute(update(Model).where(Model.id == broken).values(weights=b"garbage"))
    api.call("post", by_alias, 500, name="broken", alias="production", json=row)
    api.call("post", by_version, 500, name="broken", version=1, json=row)


def open_inference(api: Api, app: Flask) -> None:
    """The /v2 routes, on the registered model "doc" (production: version 1)."""
    api.call("get", "/v2", 200)
    api.call("get", "/v2/health/live", 200, headers={})
    api.call("get", "/v2/health/ready", 200, headers={})
    named: dict[str, Any] = {"model_name": "doc"}
    versioned: dict[str, Any] = {"model_name": "doc", "model_version": "1"}
    unknown: dict[str, Any] = {"model_name": "nope"}
    models = "/v2/models/{model_name}"
    version = models + "/versions/{model_version}"
    for template, names in ((models, named), (version, versioned)):
        for suffix in ("", "/ready"):
            api.call("get", template + suffix, 200, **names)
            api.call("get", template + suffix, 404, **{**names, **unknown})
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 20], "data": [0.5] * 20}
    bytes_tensor = {**tensor, "datatype": "BYTES"}
    for template, names in ((models + "/infer", named), (version + "/infer", versioned)):
        api.call("post", template, 200, json={"id": "x", "inputs": [tensor]}, **names)
        api.call("post", template, 400, json={"inputs": [bytes_tensor]}, **names)
        api.call("post", template, 404, json={"inputs": [tensor]}, **{**names, **unknown})
        api.call("post", template, 413, json={"pad": "x" * (2 * 1024 * 1024)}, **names)
    readable = app.extensions["trainsvc.db"]
    app.extensions["trainsvc.db"] = Database("postgresql://nobody@127.0.0.1:1/none")
    try:
        api.call("get", "/v2/health/ready", 503, headers={})
    finally:
        app.extensions["trainsvc.db"] = readable


def sweeps(api: Api, database: Database) -> None:
    """/v1/sweeps and a sweep's own routes, run to the end in this process."""
    body = {
        "spec": small_spec(),
        "space": {"optimizer": {"choices": ["sgd", "adam"]}},
        "strategy": "grid",
        "objective": {"metric": "loss"},
    }
    api.call("post", "/v1/sweeps", 200, query="?dry_run=true", json=body)
    api.call("post", "/v1/sweeps", 400, data="{not json", content_type="application/json")
    api.call("post", "/v1/sweeps", 413, json={"pad": "x" * (2 * 1024 * 1024)})
    api.call("post", "/v1/sweeps", 415, data="a=b", content_type="text/plain")
    api.call("post", "/v1/sweeps", 422, json={**body, "space": {"nope": {"choices": [1]}}})
    cancelled = api.call("post", "/v1/sweeps", 202, json=body).get_json()["id"]
    api.call("post", "/v1/sweeps/{sweep_id}/cancel", 202, sweep_id=cancelled)
    api.call("post", "/v1/sweeps/{sweep_id}/cancel", 409, sweep_id=cancelled)
    sweep_id = api.call("post", "/v1/sweeps", 202, json=body).get_json()["id"]
    while trials := advance(database, sweep_id):
        for job_id in trials:
            assert run_job(database, job_id) == "succeeded"
    advance(database, sweep_id)
    done = api.call("get", "/v1/sweeps/{sweep_id}", 200, sweep_id=sweep_id).get_json()
    assert done["status"] == "succeeded" and done["progress"] == {"finished": 2, "total": 2}
    api.call("get", "/v1/sweeps", 200, query="?limit=1")
    api.call("get", "/v1/sweeps", 422, query="?status=weird")
    for template in (
        "/v1/sweeps/{sweep_id}",
        "/v1/sweeps/{sweep_id}/plot.png",
        "/v1/sweeps/{sweep_id}/events",
    ):
        api.call("get", template, 404, sweep_id="nope")
        api.call("get", template, 422, sweep_id="no%00pe")
    api.call("post", "/v1/sweeps/{sweep_id}/cancel", 404, sweep_id="nope")
    api.call("post", "/v1/sweeps/{sweep_id}/cancel", 422, sweep_id="x" * 37)
    etag = api.call("get", "/v1/sweeps/{sweep_id}/plot.png", 200, sweep_id=sweep_id).headers["ETag"]
    unchanged = {**ALICE, "If-None-Match": etag}
    api.call("get", "/v1/sweeps/{sweep_id}/plot.png", 304, sweep_id=sweep_id, headers=unchanged)
    stream = api.call("get", "/v1/sweeps/{sweep_id}/events", 200, sweep_id=sweep_id)
    got = list(parse_events([stream.get_data(as_text=True)]))
    assert [e.event for e in got].count("trial") == 2
    assert got[-1].event == "sweep" and got[-1].data["status"] == "succeeded"
    check(component("SweepOut"), got[-1].data, "event sweep")


def keys_and_limits(api: Api, app: Flask) -> None:
    """Every operation behind a key answers 401 without one and 429 once the key's limit is hit."""
    limiter = app.extensions["trainsvc.ratelimit"]
    for path, operations in DOC["paths"].items():
        for method, operation in operations.items():
            if "401" not in operation["responses"]:
                continue
            names: dict[str, Any] = {
                p["name"]: 1 if p["schema"].get("type") == "integer" else "nope"
                for p in operation.get("parameters", [])
                if p["in"] == "path"
            }
            api.call(method, path, 401, headers={}, **names)
            app.extensions["trainsvc.ratelimit"] = Refuse()
            try:
                api.call(method, path, 429, **names)
            finally:
                app.extensions["trainsvc.ratelimit"] = limiter


def health(api: Api, queue: RecordingQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    api.call("get", "/healthz", 200, headers={})
    api.call("get", "/readyz", 200, headers={})
    monkeypatch.setattr(queue, "ready", lambda: False)
    api.call("get", "/readyz", 503, headers={})


def test_every_documented_answer_is_given_and_matches_the_document(
    app: Flask,
    client: FlaskClient,
    database: Database,
    queue: RecordingQueue,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = Api(client)
    jobs(api, database)
    done = client.get("/v1/jobs?status=succeeded", headers=ALICE).get_json()["items"][0]["id"]
    events_unavailable(api, app, done)
    models(api, app, client, database)
    evaluation_and_export(api, client, database)
    datasets(api)
    registry(api, app, client, database)
    open_inference(api, app)

    sweeps(api, database)
    keys_and_limits(api, app)
    health(api, queue, monkeypatch)
    database_unavailable(api, app)
    missing = sorted(documented() - api.seen)
    assert not missing, f"documented answers this test never saw (add a call for each): {missing}"


def test_the_check_refuses_a_body_off_the_document() -> None:
    epoch = component("Epoch")
    assert epoch.is_valid({"epoch": 1, "loss": 0.5, "seconds": 0.1})
    assert not epoch.is_valid({"epoch": 1, "loss": 0.5, "seconds": 0.1, "extra": 1})
    assert not epoch.is_valid({"epoch": "one", "loss": 0.5, "seconds": 0.1})
    assert not component("JobList").is_valid({"items": [{"id": "x"}], "next_cursor": None})
