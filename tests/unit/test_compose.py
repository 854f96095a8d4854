"""docker-compose.yml and the Dockerfile, checked for structure (no Docker engine runs here)."""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import pytest
import yaml

from core.settings import ENV_VARS, Settings
from service.app import create_app
from tests.conftest import RecordingQueue
from tests.support import ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("migrate", "api", "worker")
LONG_RUNNING = ("api", "worker", "flower", "redis", "postgres")
# Read by the processes themselves rather than by Settings.
OTHER_VARIABLES = {
    "API_KEYS",
    "VAR_DIR",
    "WEB_CONCURRENCY",
    "WEB_THREADS",
    "PROMETHEUS_MULTIPROC_DIR",
}


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    return list(value) if isinstance(value, list) else shlex.split(value)


def test_the_full_stack_is_there() -> None:
    assert set(SERVICES) == {"migrate", "api", "worker", "flower", "redis", "postgres"}


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_every_long_running_service_has_a_health_check(service: str) -> None:
    check = SERVICES[service]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) >= 2
    assert check["interval"] and check["retries"] >= 3
    assert SERVICES[service].get("restart") == "unless-stopped"


def test_migrations_run_once_before_the_api_and_workers() -> None:
    assert command("migrate") == ["python", "-m", "service.manage", "init"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in ("api", "worker"):
        depends = SERVICES[service]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"


def test_workers_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker
    argv = command("worker")
    assert argv[:4] == ["celery", "-A", "worker.main", "worker"]
    assert argv[argv.index("--queues") + 1] == Settings().queue_name
    assert "-E" in argv  # task events, for Flower
    # A worker stopping mid-job gets time to finish it.
    assert worker["stop_grace_period"]


def test_the_api_runs_under_the_gunicorn_config_and_its_health_routes_exist() -> None:
    argv = command("api")
    assert argv[:3] == ["gunicorn", "--config", "python:service.gunicorn_conf"]
    assert argv[-1] == "service.app:create_app()"
    assert (ROOT / "service" / "gunicorn_conf.py").exists()
    assert SERVICES["api"]["ports"] == ["${API_PORT:-8000}:8000"]
    routes = {
        rule.rule for rule in create_app(Settings(), queue=RecordingQueue()).url_map.iter_rules()
    }
    probe = " ".join(SERVICES["api"]["healthcheck"]["test"])
    paths = re.findall(r"127\.0\.0\.1:8000(/\w+)", probe)
    assert paths and all(path in routes for path in paths), paths
    assert SERVICES["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]


def app_environment(service: str) -> dict[str, str]:
    env: dict[str, str] = SERVICES[service]["environment"]
    return env


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_use_known_settings_and_the_compose_hosts(service: str) -> None:
    env = app_environment(service)
    unknown = set(env) - set(ENV_VARS) - OTHER_VARIABLES
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"
    postgres = SERVICES["postgres"]["environment"]
    user, password, db = (
        postgres[k] for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    )
    assert env["DATABASE_URL"] == f"postgresql://{user}:{password}@postgres:5432/{db}"
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["LOG_FORMAT"] == "json"


def test_secrets_come_from_the_environment_and_are_required() -> None:
    env = app_environment("api")
    for name in ("API_KEYS", "SECRET_KEY"):
        assert env[name].startswith(f"${{{name}:?"), f"{name} must be required, not defaulted"
    flower = SERVICES["flower"]["environment"]
    assert flower["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_flower_watches_the_same_broker() -> None:
    argv = command("flower")
    assert "flower" in argv
    assert f"--broker={app_environment('worker')['REDIS_URL']}" in argv
    assert SERVICES["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_the_image_holds_every_package_and_serves_the_api() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
    assert "USER trainsvc" in dockerfile  # not root
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    assert yaml.safe_load(cmd.group(1)) == command("api")
    assert SERVICES["api"]["build"] == "."
