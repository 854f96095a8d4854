"""The API process never imports TensorFlow (or Keras), even while serving predictions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

PROBE = r"""
import sys, copy, json
from pathlib import Path
from core import migrate
from service.app import create_app
from core.settings import Settings
from core.db import Database
from tests.conftest import RecordingQueue, add_keys, auth
from tests.support import SEED_SPEC
from worker.jobs import run_job

url = f"sqlite:///{sys.argv[1]}/probe.db"
migrate.upgrade(url)
db = Database(url)
add_keys(db)
client = create_app(Settings(database_url=url), queue=RecordingQueue()).test_client()
spec = copy.deepcopy(SEED_SPEC)
spec["epochs"] = 1
job = client.post("/v1/jobs", json=spec, headers=auth("alice")).get_json()
assert client.post("/v1/jobs?dry_run=true", json=spec, headers=auth("alice")).status_code == 200
# Train in a child process so that only the API's own imports stay in this one.
import subprocess
code = "import sys; from core.db import Database; from worker.jobs import run_job; " \
       "assert run_job(Database(sys.argv[1]), sys.argv[2]) == 'succeeded'"
subprocess.run([sys.executable, "-c", code, url, job["id"]], check=True)
model_id = client.get(f"/v1/jobs/{job['id']}", headers=auth("alice")).get_json()["model_id"]
answer = client.post(f"/v1/models/{model_id}/predict", json={"instances": [[0.0] * 20]},
                     headers=auth("alice"))
assert answer.status_code == 200, answer.get_data()
for path in ("/healthz", "/readyz", "/v1/jobs", f"/v1/models/{model_id}"):
    client.get(path, headers=auth("alice"))
# The `onnx` package is imported on the first ONNX export only, never by the API's start-up.
print("ONNX_BEFORE_EXPORT", "onnx" in sys.modules)
for path in ("evaluation.png", "export?format=npz", "export?format=onnx"):
    exported = client.get(f"/v1/models/{model_id}/{path}", headers=auth("alice"))
    assert exported.status_code == 200, exported.get_data()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print("LOADED", loaded)
"""


def test_serving_predictions_imports_no_tensorflow(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
    assert "ONNX_BEFORE_EXPORT False" in result.stdout, result.stdout


def test_no_service_module_imports_tensorflow() -> None:
    for path in (ROOT / "service").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("tensorflow", "keras"), f"{path}: {name}"
