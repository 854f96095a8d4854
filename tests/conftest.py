"""Fixtures: an app on a scratch SQLite database with a recording queue, and API keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core import migrate
from core.db import Database
from core.settings import Settings
from service.app import create_app
from tests.support import KEYS, add_keys


class RecordingQueue:
    """Stands in for the broker in API-only tests: records what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def enqueue(self, job_id: str) -> None:
        self.sent.append(job_id)

    def ready(self) -> bool:
        return True


def auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    migrate.upgrade(url)
    add_keys(Database(url))
    return Settings(database_url=url, var_dir=tmp_path, max_content_length=1024 * 1024)


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def app(settings: Settings, queue: RecordingQueue) -> Iterator[Flask]:
    app = create_app(settings, queue=queue)
    yield app
    app.extensions["trainsvc.db"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def database(app: Flask) -> Database:
    db: Database = app.extensions["trainsvc.db"]
    return db
