"""Schemathesis over our own OpenAPI document: no 5xx, and every answer matches its schema.

The suite runs a small number of generated requests per operation; `make fuzz` runs the full
size (FUZZ_EXAMPLES per operation, 200 by default: well over 1,000 requests).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core import migrate
from core.db import Database
from core.settings import Settings
from service.app import create_app
from tests.conftest import RecordingQueue, add_keys, auth

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _app() -> object:
    tmp = Path(tempfile.mkdtemp(prefix="trainsvc-fuzz-"))
    url = f"sqlite:///{tmp / 'fuzz.db'}"
    migrate.upgrade(url)
    add_keys(Database(url))
    settings_ = Settings(database_url=url, var_dir=tmp, rate_limit_per_minute=0)
    app = create_app(settings_, queue=RecordingQueue())
    # Jobs the fuzzer submits stay queued (nothing trains them), so their event streams would
    # never end; bound every stream so a generated request for one cannot hang the run.
    app.config["EVENTS_MAX_SECONDS"] = 2
    return app


schema = schemathesis.openapi.from_wsgi("/openapi.json", _app())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_never_fails_and_keeps_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=auth("alice"), checks=CHECKS)


def test_the_docs_page_lists_every_route() -> None:
    app = _app()
    client = app.test_client()  # type: ignore[attr-defined]
    page = client.get("/docs").get_data(as_text=True)
    for route in (
        "POST /v1/jobs",
        "GET /v1/jobs/{job_id}/metrics",
        "POST /v1/models/{model_id}/predict",
    ):
        assert route in page
    assert client.get("/openapi.json").get_json()["openapi"].startswith("3.")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
