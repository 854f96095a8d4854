"""The API served over real HTTP by gunicorn (gevent, service/gunicorn_conf.py), and Chromium."""

from __future__ import annotations

import os
import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from core.settings import Settings
from service.stack import api_command, free_port
from tests.support import LoggedProcess

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Gunicorn(LoggedProcess):
    """The API under gunicorn with the shipped configuration (as `make run`), on a free port."""

    name = "gunicorn"

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        workers: int = 1,
        **extra_env: str,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "DATABASE_URL": settings.database_url,
            "BROKER_URL": settings.effective_broker_url,
            "QUEUE_NAME": settings.queue_name,
            "VAR_DIR": str(settings.var_dir),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "SECRET_KEY": secrets.token_hex(16),
            "LOG_FORMAT": "text",
            "RATE_LIMIT_PER_MINUTE": "0",
            **extra_env,
        }
        # The command `make run` uses (GUNICORN_CMD_ARGS in `extra_env` overrides the config).
        super().__init__(api_command("127.0.0.1", self.port), env, log_path)

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_until(self._answers, timeout)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False


@contextmanager
def gunicorn(settings: Settings, log_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(settings, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def require_chromium() -> Path:
    """Debian's chromium; without it the browser test fails under CI and is skipped elsewhere."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = (
        f"{CHROMIUM} is missing: the dashboard's browser test drives Debian's chromium "
        "(`apt-get install chromium`, which `make test` does when it can; or set CHROMIUM)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser driven by Playwright (its own download is not needed)."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
