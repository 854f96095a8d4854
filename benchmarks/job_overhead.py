"""Job overhead: POST -> succeeded for a tiny job, minus the training time the job reports.

    .venv/bin/python -m benchmarks.job_overhead

Then 100 tiny jobs queued at once and drained by one worker with 2 pool processes: jobs/s.
Real processes: a Celery worker, Redis (or the embedded broker), SQLite.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from benchmarks.stack import KEY, prepare_database, worker_env
from core.settings import Settings
from service.app import create_app
from tests.support import WorkerProcess

TINY: dict[str, Any] = {
    "dataset": {"builtin": "make_classification", "params": {"n_samples": 100}},
    "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 2, "activation": "softmax"},
    ],
    "loss": "sparse_categorical_crossentropy",
    "optimizer": "adam",
    "epochs": 1,
}
HEADERS = {"Authorization": f"Bearer {KEY}"}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url, _ = prepare_database(tmp)
        env = worker_env(url, tmp)
        broker = env["BROKER_URL"]
        worker = WorkerProcess(env, tmp / "worker.log", concurrency=2)
        try:
            worker.wait_ready()
            client = create_app(Settings.from_env(env)).test_client()

            def submit() -> str:
                response = client.post("/v1/jobs", json=TINY, headers=HEADERS)
                assert response.status_code == 202, response.get_json()
                return str(response.get_json()["id"])

            def finished(job_id: str) -> dict[str, Any] | None:
                job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=HEADERS).get_json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    assert job["status"] == "succeeded", job
                    return job
                return None

            overheads = []
            for i in range(25):
                started = time.perf_counter()
                job_id = submit()
                while finished(job_id) is None:
                    time.sleep(0.002)
                wall = time.perf_counter() - started
                history = client.get(f"/v1/jobs/{job_id}/metrics", headers=HEADERS).get_json()
                training = sum(row["seconds"] for row in history["history"])
                if i >= 5:  # the first jobs warm the pool processes
                    overheads.append((wall - training) * 1000)
            overheads.sort()
            p50 = statistics.median(overheads)
            p95 = overheads[int(len(overheads) * 0.95) - 1]

            started = time.perf_counter()
            ids = [submit() for _ in range(100)]
            pending = set(ids)
            while pending:
                pending = {j for j in pending if finished(j) is None}
                time.sleep(0.01)
            rate = len(ids) / (time.perf_counter() - started)
        finally:
            worker.stop()
    print(f"broker: {broker.split('://')[0]}; database: SQLite")
    print(f"overhead per job: p50 {p50:.0f} ms, p95 {p95:.0f} ms; 100 jobs: {rate:.1f} jobs/s\n")
    print_table(
        [
            ("job overhead p50", f"{p50:.0f} ms", "<= 150 ms", p50 <= 150),
            ("tiny jobs/s, 2 worker processes", f"{rate:.1f}", ">= 30", rate >= 30),
        ]
    )


if __name__ == "__main__":
    main()
