"""docker-compose.yml and the Dockerfile, checked for structure (no Docker engine runs here)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
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
LONG_RUNNING = ("api", "proxy", "worker", "flower", "redis", "postgres")
# Read by the processes themselves rather than by Settings.
OTHER_VARIABLES = {
    "API_KEYS",
    "VAR_DIR",
    "WEB_CONCURRENCY",
    "PROMETHEUS_MULTIPROC_DIR",
}


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    return list(value) if isinstance(value, list) else shlex.split(value)


def test_the_full_stack_is_there() -> None:
    assert set(SERVICES) == {"migrate", "api", "proxy", "worker", "flower", "redis", "postgres"}


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
    routes = {
        rule.rule for rule in create_app(Settings(), queue=RecordingQueue()).url_map.iter_rules()
    }
    probe = " ".join(SERVICES["api"]["healthcheck"]["test"])
    paths = re.findall(r"127\.0\.0\.1:8000(/\w+)", probe)
    assert paths and all(path in routes for path in paths), paths
    assert SERVICES["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert SERVICES["api"]["environment"]["COOKIE_SECURE"] == "${COOKIE_SECURE:-false}"


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


def nginx_blocks(text: str) -> list[Any]:
    """nginx's configuration as nested lists: [name, args] for a directive, plus a list of
    children for a block. Comments dropped; no quoting tricks are used in ours."""
    tokens = re.findall(r"[{};]|[^\s{};]+", re.sub(r"#[^\n]*", "", text))

    def parse(at: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        words: list[str] = []
        while at < len(tokens):
            token = tokens[at]
            at += 1
            if token == ";":
                items.append([words[0], words[1:]])
                words = []
            elif token == "{":
                children, at = parse(at)
                items.append([words[0], words[1:], children])
                words = []
            elif token == "}":
                return items, at
            else:
                words.append(token)
        return items, at

    return parse(0)[0]


def find(items: list[Any], name: str) -> list[Any]:
    return [item for item in items if item[0] == name]


def value(items: list[Any], name: str) -> list[str]:
    (found,) = find(items, name)
    args: list[str] = found[1]
    return args


def seconds(raw: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(raw[:-1]) * units[raw[-1]] if raw[-1] in units else float(raw)


NGINX = nginx_blocks((ROOT / "deploy" / "nginx.conf").read_text())
(HTTP,) = [block[2] for block in NGINX if block[0] == "http"]
(SERVER,) = [block[2] for block in find(HTTP, "server")]


def test_only_the_proxy_is_published_and_it_serves_its_config() -> None:
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert proxy["ports"] == ["${API_PORT:-8000}:8000"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    assert "ports" not in SERVICES["api"] and SERVICES["api"]["expose"] == ["8000"]
    assert value(SERVER, "listen") == ["8000"]
    upstream = value(SERVER, "set")
    assert upstream == ["$api", "http://api:8000"]  # the compose service, gunicorn's port
    assert Settings().port == 8000


def location_for(path: str) -> list[Any]:
    """The location block nginx picks for `path`: the first regex that matches, else `/`."""
    for location in find(SERVER, "location"):
        if location[1][0] == "~" and re.search(location[1][1], path):
            children: list[Any] = location[2]
            return children
    (fallback,) = [loc[2] for loc in find(SERVER, "location") if loc[1] == ["/"]]
    return fallback


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/01abc/events",
        "/ui/jobs/01abc/events",
        "/v1/sweeps/01abc/events",
        "/ui/sweeps/01abc/events",
    ],
)
def test_event_streams_pass_the_proxy_unbuffered(path: str) -> None:
    location = location_for(path)
    assert value(location, "proxy_buffering") == ["off"]
    assert value(location, "proxy_pass") == ["$api"]
    # Quiet for at most EVENTS_HEARTBEAT_SECONDS between events: the proxy must wait longer.
    assert (
        seconds(value(location, "proxy_read_timeout")[0]) > 4 * Settings().events_heartbeat_seconds
    )


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/01abc",
        "/v1/jobs/01abc/metrics",
        "/v1/jobs",
        "/ui/jobs/01abc",
        "/v1/sweeps/01abc",
        "/ui/sweeps/01abc/board",
        "/healthz",
    ],
)
def test_everything_else_is_buffered_and_slow_clients_wait_in_nginx(path: str) -> None:
    location = location_for(path)
    assert find(location, "proxy_buffering") == [] and value(SERVER, "proxy_buffering") == ["on"]
    assert value(location, "proxy_pass") == ["$api"]
    assert value(SERVER, "proxy_request_buffering") == ["on"]
    assert seconds(value(HTTP, "client_header_timeout")[0]) <= 30
    assert seconds(value(HTTP, "client_body_timeout")[0]) <= 60
    size = value(HTTP, "client_max_body_size")[0]
    assert int(size.removesuffix("m")) * 1024 * 1024 >= Settings().max_content_length


def test_the_api_runs_one_blas_thread_unless_told_otherwise() -> None:
    """The gunicorn configuration sets OPENBLAS_NUM_THREADS before NumPy can load (it would be
    read once, at import); an operator's own value is kept."""
    probe = (
        "import os, sys; import service.gunicorn_conf; "
        "print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules)"
    )
    for given, expected in ((None, "1 False"), ("3", "3 False")):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        if given is not None:
            env["OPENBLAS_NUM_THREADS"] = given
        done = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected
