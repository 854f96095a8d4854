"""With the database unreachable the API answers 503 in the error shape at once, never a 500 or
a hang; /healthz stays 200 and /readyz says what is missing."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import exc

from core.db import connection_lost, postgres_timeouts
from core.settings import Settings
from service.app import create_app
from tests.conftest import RecordingQueue, auth


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing"
    settings = Settings(database_url=url, var_dir=tmp_path, auth_failures_per_minute=0,
                        rate_limit_per_minute=0, database_timeout_seconds=2)  # fmt: skip
    return create_app(settings, queue=RecordingQueue()).test_client()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/models/01a2b3c4-0000-7000-8000-000000000000"),
    ],
)
def test_what_needs_the_database_answers_503_json(
    client: FlaskClient, method: str, path: str
) -> None:
    started = time.monotonic()
    response = client.open(path, method=method, headers=auth("alice"), json={"layers": []})
    assert time.monotonic() - started < 5
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"] == "5"


def test_liveness_stays_up_and_readiness_names_the_database(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"].startswith("error")


def test_connection_errors_are_told_from_wrong_statements() -> None:
    assert connection_lost(exc.OperationalError("SELECT 1", {}, Exception("server closed")))
    assert connection_lost(exc.TimeoutError("pool"))
    assert not connection_lost(exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not connection_lost(ValueError("not a database error"))
    locked = sqlite3.OperationalError("database is locked")
    assert not connection_lost(exc.OperationalError("UPDATE", {}, locked))


def test_every_wait_on_postgres_is_bounded() -> None:
    options = postgres_timeouts(10)
    assert options["connect_timeout"] == 10 and options["tcp_user_timeout"] == 10_000
    assert options["keepalives"] == 1
    assert options["keepalives_idle"] * 1 + options["keepalives_interval"] * 3 <= 10
    assert postgres_timeouts(0.5)["connect_timeout"] == 2  # libpq's minimum
