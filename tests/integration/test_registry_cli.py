"""`trainsvc registry ...` and the client's registry methods over real HTTP, with a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tests.conftest import KEYS
from tests.integration.conftest import Stack
from tests.integration.test_registry import ROWS, trained
from tests.support import ROOT, TINY_SPEC
from trainsvc_client import ApiError, Client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, stack.client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def trainsvc(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """This checkout's `trainsvc` command (python -m, so the worktree's code runs)."""
    env = {
        **os.environ,
        "TRAINSVC_URL": url,
        "TRAINSVC_API_KEY": KEYS["alice"],
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, "-m", "trainsvc_client.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_registry_commands(stack: Stack, api_url: str) -> None:
    first = trained(stack, {**TINY_SPEC, "seed": 1})
    second = trained(stack, {**TINY_SPEC, "seed": 2})
    name = f"cli-{uuid.uuid4().hex[:8]}"
    added = trainsvc(api_url, "registry", "add", name, first, "--create", "--alias", "production")
    assert added.returncode == 0, added.stderr
    assert f"{name} v1 = model {first}" in added.stdout and "production -> v1" in added.stdout
    assert trainsvc(api_url, "registry", "add", name, second).returncode == 0

    shown = trainsvc(api_url, "registry", "show", name)
    assert "production -> v1" in shown.stdout and "v2" in shown.stdout
    listed = json.loads(trainsvc(api_url, "registry", "list", "--json").stdout)
    assert name in [m["name"] for m in listed]

    rows = json.dumps(ROWS)
    by_alias = trainsvc(
        api_url, "registry", "predict", f"{name}@production", "--instances", rows, "--json"
    )
    by_version = trainsvc(
        api_url, "registry", "predict", name, "--version", "1", "--instances", rows, "--json"
    )
    assert json.loads(by_alias.stdout) == json.loads(by_version.stdout)
    assert json.loads(by_alias.stdout)["model_id"] == first

    assert trainsvc(api_url, "registry", "alias", name, "production", "2").returncode == 0
    refused = trainsvc(api_url, "registry", "delete", name, "--version", "2")
    assert refused.returncode == 1 and "409" in refused.stderr and "production" in refused.stderr
    assert trainsvc(api_url, "registry", "delete", name, "--version", "1").returncode == 0
    history = trainsvc(api_url, "registry", "history", name)
    assert "version_deleted" in history.stdout and "alice (key-alic…)" in history.stdout
    assert trainsvc(api_url, "registry", "delete", name).returncode == 0
    gone = trainsvc(api_url, "registry", "show", name)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_client_registry_methods(stack: Stack, api_url: str) -> None:
    client = Client(api_url, KEYS["alice"])
    model_id = trained(stack)
    name = f"client-{uuid.uuid4().hex[:8]}"
    assert client.register_model(name, "from the client")["description"] == "from the client"
    assert client.add_version(name, model_id)["version"] == 1
    assert client.set_alias(name, "staging", 1)["aliases"] == [{"alias": "staging", "version": 1}]
    answer = client.predict_registered(name, ROWS, alias="staging")
    assert answer == client.predict(model_id, ROWS)
    assert client.versions(name)[0]["aliases"] == ["staging"]
    client.delete_alias(name, "staging")
    assert client.update_registered_model(name, None)["description"] is None
    assert client.registry_history(name)["items"][0]["action"] == "updated"
    client.delete_version(name, 1)
    client.delete_registered_model(name)
    with pytest.raises(ApiError) as missing:
        client.registered_model(name)
    assert missing.value.status == 404
