"""Memory: worker resident memory across 50 Keras and 50 NumPy jobs; API memory, 100 models.

    .venv/bin/python -m benchmarks.memory

The worker (one pool process, replaced every WORKER_MAX_KERAS_JOBS_PER_CHILD Keras jobs) is sampled
after every 10th job: the sum of its processes' resident memory must stay flat. The API
loads 100 models through predict; its cache is bounded (MODEL_CACHE_SIZE).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from benchmarks.stack import KEY, prepare_database, train_model, worker_env
from core.settings import Settings
from service.app import create_app
from tests.support import WorkerProcess, child_pids

HEADERS = {"Authorization": f"Bearer {KEY}"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def small_job(engine: str) -> dict[str, Any]:
    return {
        "engine": engine,
        "dataset": {"builtin": "iris"},
        "preprocessing": {"standardize": True},
        "layers": [
            {"type": "dense", "units": 32, "activation": "relu"},
            {"type": "batch_norm"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ],
        "loss": "sparse_categorical_crossentropy",
        "optimizer": "adam",
        "epochs": 3,
    }


def worker_samples(tmp: Path, url: str, engine: str) -> list[float]:
    env = worker_env(url, tmp)
    worker = WorkerProcess(env, tmp / f"worker-{engine}.log", concurrency=1)
    samples = []
    try:
        worker.wait_ready()
        client = create_app(Settings.from_env(env)).test_client()
        for i in range(1, 51):
            job_id = client.post("/v1/jobs", json=small_job(engine), headers=HEADERS).get_json()[
                "id"
            ]
            while True:
                job = client.get(f"/v1/jobs/{job_id}", headers=HEADERS).get_json()
                if job["status"] != "queued" and job["status"] != "running":
                    assert job["status"] == "succeeded", job
                    break
            if i % 10 == 0:
                pids = [worker.proc.pid, *child_pids(worker.proc.pid)]
                samples.append(sum(rss_mib(p) for p in pids))
    finally:
        worker.stop()
    return samples


def api_cache(tmp: Path, url: str, db: Any) -> tuple[float, float, int]:
    import os

    models = [train_model(db, "numpy", epochs=1) for _ in range(100)]
    app = create_app(
        Settings(database_url=url, broker_url=f"filesystem://{tmp / 'b'}", rate_limit_per_minute=0)
    )
    client = app.test_client()
    row = {"instances": [[0.0] * 20]}
    client.post(f"/v1/models/{models[0]}/predict", json=row, headers=HEADERS)
    before = rss_mib(os.getpid())
    for model_id in models:
        assert (
            client.post(f"/v1/models/{model_id}/predict", json=row, headers=HEADERS).status_code
            == 200
        )
    return before, rss_mib(os.getpid()), len(app.extensions["trainsvc.models"])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url, db = prepare_database(tmp)
        results = {engine: worker_samples(tmp, url, engine) for engine in ("keras", "numpy")}
        before, after, cached = api_cache(tmp, url, db)
    rows = []
    for engine, samples in results.items():
        print(
            f"{engine} worker RSS after jobs 10..50 (MiB): "
            + ", ".join(f"{s:.0f}" for s in samples)
        )
        growth = samples[-1] - min(samples[:2])
        rows.append(
            (
                f"{engine} worker growth, jobs 10->50",
                f"{growth:+.0f} MiB",
                "flat (< 50 MiB)",
                growth < 50,
            )
        )
    print(
        f"API RSS before/after loading 100 models: {before:.0f} / {after:.0f} MiB; "
        f"{cached} models cached\n"
    )
    rows.append(("API models cached of 100", str(cached), "bounded (64)", cached <= 64))
    print_table(rows)


if __name__ == "__main__":
    main()
