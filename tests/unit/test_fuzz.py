"""Schemathesis over our own OpenAPI document: no 5xx, and every answer matches its schema.

The suite runs a small number of generated requests per operation; `make fuzz` runs the full
size (FUZZ_EXAMPLES per operation, 200 by default: well over 1,000 requests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.settings import Settings
from service.app import create_app
from service.openapi import openapi_document
from tests.conftest import RecordingQueue, auth
from tests.support import scratch_database

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _app(url: str, folder: Path) -> Flask:
    """The API on the database at `url` (migrated, holding the test keys), without limits."""
    settings_ = Settings(
        database_url=url, var_dir=folder, rate_limit_per_minute=0, auth_failures_per_minute=0
    )
    app = create_app(settings_, queue=RecordingQueue())
    # Jobs the fuzzer submits stay queued (nothing trains them), so their event streams would
    # never end; bound every stream so a generated request for one cannot hang the run.
    app.config["EVENTS_MAX_SECONDS"] = 2
    return app


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """The API on each database (PostgreSQL refuses what SQLite lets through: NUL, long text)."""
    folder = tmp_path_factory.mktemp(request.param)
    with ExitStack() as cleanup:
        url = scratch_database(request.param, folder, cleanup)
        if url is None:
            pytest.skip("PostgreSQL does not answer")
        app = _app(url, folder)
        yield app
        app.extensions["trainsvc.db"].dispose()


# The document is the same on every database; each call goes to the `api` fixture's app.
schema = schemathesis.openapi.from_wsgi(
    "/openapi.json", create_app(Settings(), queue=RecordingQueue())
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_fails_and_keeps_its_schema(case: schemathesis.Case, api: Flask) -> None:
    """Generated requests, valid and not (wrong types, missing fields, NUL in strings)."""
    case.call_and_validate(headers=auth("alice"), checks=CHECKS, app=api)


# Bodies the generator does not make: nested past any parser's recursion, deep by one over the
# limit, and a number with more digits than Python converts.
HOSTILE_BODIES = {
    "1000 deep": "[" * 1000 + "]" * 1000,
    "65 deep": '{"instances": ' + "[" * 64 + "]" * 64 + "}",
    "4301 digits": '{"instances": [[' + "7" * 4301 + "]]}",
}


def test_hostile_json_bodies_are_400(api: Flask) -> None:
    """Every operation that takes JSON answers each hostile body with the documented 400."""
    headers = {**auth("alice"), "Content-Type": "application/json"}
    takes_json = [
        schema[path][method]
        for path, operations in openapi_document()["paths"].items()
        for method, operation in operations.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    # submit a job, submit a sweep, predict; the registry's create, update, add version, set
    # alias, and predict by alias and by version; /v2 infer (by name and by version)
    assert len(takes_json) == 11
    for operation in takes_json:
        names = {
            p.name: 1 if p.definition.get("schema", {}).get("type") == "integer" else "nope"
            for p in operation.path_parameters
        }
        for name, body in HOSTILE_BODIES.items():
            case = operation.Case(path_parameters=names, media_type="application/json")
            response = case.call(headers=headers, data=body, app=api)
            case.validate_response(response, checks=CHECKS)
            assert response.status_code == 400, (operation.label, name, response.text)


def test_strings_with_a_nul_or_past_their_length_are_documented_4xx(api: Flask) -> None:
    """Every string parameter the document names (path, query, header), sent with a NUL and one
    character past its maxLength: a documented 4xx, never a database error."""
    sent = 0
    for path, operations in openapi_document()["paths"].items():
        for method, definition in operations.items():
            operation = schema[path][method]
            parameters = definition.get("parameters", [])
            where = {"path": "path_parameters", "query": "query", "header": "headers"}
            base: dict[str, dict[str, str]] = {kind: {} for kind in where.values()}
            for parameter in parameters:
                if parameter["in"] == "path":
                    base["path_parameters"][parameter["name"]] = "nope"
            for parameter in parameters:
                kind = parameter["schema"].get("type")
                if kind != "string" or "enum" in parameter["schema"]:
                    continue
                longest = parameter["schema"].get("maxLength", 1000)
                for value in ("a\x00b", "x" * (longest + 1)):
                    given = {k: dict(v) for k, v in base.items()}
                    given[where[parameter["in"]]][parameter["name"]] = value
                    case = operation.Case(**given)  # type: ignore[arg-type]
                    response = case.call(headers=auth("alice"), app=api)
                    case.validate_response(response, checks=CHECKS)
                    assert 400 <= response.status_code < 500, (path, parameter["name"])
                    sent += 1
    assert sent >= 20


def test_the_docs_page_lists_every_route(tmp_path: Path) -> None:
    with ExitStack() as cleanup:
        url = scratch_database("sqlite", tmp_path, cleanup)
        assert url is not None
        client = _app(url, tmp_path).test_client()
    page = client.get("/docs").get_data(as_text=True)
    for route in (
        "POST /v1/jobs",
        "GET /v1/jobs/{job_id}/metrics",
        "POST /v1/models/{model_id}/predict",
    ):
        assert route in page
    assert client.get("/openapi.json").get_json()["openapi"].startswith("3.")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
