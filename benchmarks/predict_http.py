"""Predictions over HTTP under gunicorn: one-row requests at 1, 4 and 16 concurrent clients.

    .venv/bin/python -m benchmarks.predict_http

For a NumPy-trained and a Keras-trained model: p50 / p99 latency and requests/s; beside it,
in-process Keras `model.predict` on one row. Clients are separate processes speaking raw HTTP
over loopback (so the client's own cost stays small); they share the 2 cores with the server.
Rate limiting is off for the run (it would cap one key at RATE_LIMIT_PER_MINUTE).
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from benchmarks.stack import KEY, prepare_database, start_gunicorn, stop, train_model

ROW = [
    0.1,
    -1.2,
    0.3,
    2.0,
    -0.5,
    0.0,
    1.1,
    -0.7,
    0.4,
    0.9,
    -1.5,
    0.2,
    0.8,
    -0.3,
    1.7,
    -0.9,
    0.6,
    -0.1,
    0.5,
    1.0,
]


def request_bytes(port: int, model_id: str) -> bytes:
    return post_bytes(port, f"/v1/models/{model_id}/predict", {"instances": [ROW]})


def post_bytes(port: int, path: str, payload: object) -> bytes:
    """A whole HTTP/1.1 POST of `payload` as JSON, with the benchmark's key."""
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def one_request(port: int, payload: bytes) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    elapsed = time.perf_counter() - started
    response = b"".join(chunks)
    if not response.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(response[:300].decode(errors="replace"))
    return elapsed


def client(args: tuple[int, bytes, int]) -> list[float]:
    port, payload, count = args
    return [one_request(port, payload) for _ in range(count)]


def load(port: int, payload: bytes, clients: int, per_client: int) -> tuple[float, float, float]:
    """p50 and p99 latency (ms) and requests/s with `clients` concurrent client processes."""
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        started = time.perf_counter()
        results = pool.map(client, [(port, payload, per_client)] * clients)
        wall = time.perf_counter() - started
    latencies = sorted(x for r in results for x in r)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return p50, p99, len(latencies) / wall


def keras_predict_ms(db_url: str, model_id: str) -> float:
    """Median time of in-process Keras `model.predict` on one row, same weights."""
    from core.artifact import Artifact
    from core.db import Database
    from core.models import Job, Model
    from core.spec import JobSpec
    from worker.engines import keras_engine

    db = Database(db_url)
    with db.begin() as session:
        row = session.get(Model, model_id)
        assert row is not None
        job = session.get(Job, row.job_id)
        assert job is not None
        artifact = Artifact.from_bytes(row.weights)
        spec = JobSpec.model_validate(job.spec)
    model = keras_engine.build_model(spec, artifact.meta["n_features"])
    keras_engine.import_arrays(model, spec.layers, artifact.meta["n_features"], artifact.arrays)
    x = np.asarray([ROW], dtype=np.float32)
    model.predict(x, verbose=0)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        model.predict(x, verbose=0)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


# --- Our predict route against the bare web stack, and the Open Inference Protocol ------------


def register(db_url: str, model_id: str) -> str:
    """Register the model as "bench" version 1 with the `production` alias; the name."""
    from core import model_registry
    from core.db import Database

    actor = model_registry.Actor("bench")
    with Database(db_url).begin() as session:
        model_registry.create(session, actor, "bench", None)
        model_registry.add_version(session, actor, "bench", model_id)
        model_registry.set_alias(session, actor, "bench", "production", 1)
    return "bench"


def v2_body(rows: list[list[float]]) -> dict[str, object]:
    flat = [x for row in rows for x in row]
    shape = [len(rows), len(rows[0])]
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": flat}]}


BLOCK = 50  # requests per route per turn in the side-by-side latency figures


def side_by_side(url: str, tmp: Path, model_id: str, rounds: int, per_round: int) -> None:
    """Our predict route, the bare Flask route and /v2 infer, served by the same gunicorn
    configuration at once and measured in turns (so the machine's drift touches all alike).

    Our API runs twice: with its request limits counted in process memory (the embedded setup,
    as the rest of this benchmark runs) and, when Redis answers, counted in Redis (the compose
    setup), where each request makes one round trip to Redis. Rate limiting is on in both, with a
    limit no run reaches.
    """
    from tests.support import redis_url

    name = register(url, model_id)
    limits = {"RATE_LIMIT_PER_MINUTE": "100000000"}
    memory = {**limits, "BROKER_URL": f"filesystem://{tmp / 'broker'}"}
    servers = [start_gunicorn(url, tmp, app="benchmarks.bare_app:create_app()")]
    servers.append(start_gunicorn(url, tmp, 2, None, **memory))
    redis = redis_url()
    if redis is not None:
        servers.append(start_gunicorn(url, tmp, 2, None, **limits, BROKER_URL=redis))
    (_, bare_port), (_, port) = servers[0], servers[1]
    batch = (np.random.default_rng(0).standard_normal((1000, len(ROW)))).round(6).tolist()
    one_row = {"instances": [ROW]}
    payloads = {
        "bare flask": (bare_port, post_bytes(bare_port, "/echo", one_row)),
        "predict": (port, request_bytes(port, model_id)),
        "predict by alias": (
            port,
            post_bytes(port, f"/v1/registered-models/{name}@production/predict", one_row),
        ),
        "v2 infer": (port, post_bytes(port, f"/v2/models/{name}/infer", v2_body([ROW]))),
        "v2 infer 1000 rows": (port, post_bytes(port, f"/v2/models/{name}/infer", v2_body(batch))),
    }
    if redis is not None:
        redis_port = servers[2][1]
        payloads["predict, limits in Redis"] = (redis_port, request_bytes(redis_port, model_id))
    latencies: dict[str, list[float]] = {k: [] for k in payloads}
    rps: dict[str, float] = {}
    try:
        for server_port, payload in payloads.values():
            for _ in range(100):  # warm every worker: caches, connections, imports
                one_request(server_port, payload)
        # One client, in blocks of BLOCK requests per route in turn: the machine's drift (this
        # box is shared) touches every route alike, where whole rounds of 1,000 per route left
        # two servers running the same code 10 % apart.
        for _ in range(rounds * per_round // BLOCK):
            for label, (server_port, payload) in payloads.items():
                count = max(1, BLOCK // 20) if "1000" in label else BLOCK
                latencies[label] += [one_request(server_port, payload) for _ in range(count)]
        for label in ("bare flask", "predict", "v2 infer", "predict, limits in Redis"):
            if label in payloads:
                server_port, payload = payloads[label]
                rps[label] = max(load(server_port, payload, c, per_round // 2)[2] for c in (4, 16))
    finally:
        for proc, _ in servers:
            stop(proc)
    p50 = {label: statistics.median(values) * 1000 for label, values in latencies.items()}
    print(f"\n{'one client, blocks in turn':<32}{'p50 ms':>9}{'best req/s':>12}")
    for label, value in p50.items():
        best = f"{rps[label]:.0f}" if label in rps else ""
        print(f"{label:<32}{value:>9.3f}{best:>12}")
    over_bare = p50["predict"] / p50["bare flask"]
    rps_ratio = rps["predict"] / rps["bare flask"]
    v2_ratio = p50["v2 infer"] / p50["predict"]
    rows = [
        ("predict p50 / bare flask p50", f"{over_bare:.2f}x", "<= 1.3x", over_bare <= 1.3),
        ("predict req/s / bare flask req/s", f"{rps_ratio:.2f}x", ">= 0.7x", rps_ratio >= 0.7),
        ("v2 infer p50 / predict p50", f"{v2_ratio:.2f}x", "<= 1.2x", v2_ratio <= 1.2),
        ("v2 infer, 1,000 rows, p50", f"{p50['v2 infer 1000 rows']:.1f} ms", "(reported)", True),
    ]
    if "predict, limits in Redis" in p50:
        redis_ratio = p50["predict, limits in Redis"] / p50["bare flask"]
        redis_rps = rps["predict, limits in Redis"] / rps["bare flask"]
        rows += [
            ("Redis limits: p50 / bare", f"{redis_ratio:.2f}x", "<= 1.3x", redis_ratio <= 1.3),
            ("Redis limits: req/s / bare", f"{redis_rps:.2f}x", ">= 0.7x", redis_rps >= 0.7),
        ]
    print_table(rows)


def main() -> None:
    if "--side-by-side" in sys.argv:
        quick = "--quick" in sys.argv
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            url, db = prepare_database(tmp)
            model_id = train_model(db, "numpy")
            side_by_side(
                url, tmp, model_id, rounds=3 if quick else 7, per_round=300 if quick else 1000
            )
        return
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url, db = prepare_database(tmp)
        models = {"numpy": train_model(db, "numpy"), "keras": train_model(db, "keras")}
        keras_ms = keras_predict_ms(url, models["keras"])
        proc, port = start_gunicorn(url, tmp)
        try:
            rows = []
            best_rps = 0.0
            one_client_p50 = {}
            one_client_p99 = {}
            print(f"{'model':<8}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
            for engine, model_id in models.items():
                payload = request_bytes(port, model_id)
                for _ in range(50):  # warm every gunicorn worker's model cache
                    one_request(port, payload)
                for clients, per_client in ((1, 2000), (4, 800), (16, 250)):
                    p50, p99, rps = load(port, payload, clients, per_client)
                    best_rps = max(best_rps, rps)
                    if clients == 1:
                        one_client_p50[engine], one_client_p99[engine] = p50, p99
                    print(f"{engine:<8}{clients:>8}{p50:>9.2f}{p99:>9.2f}{rps:>9.0f}", flush=True)
        finally:
            stop(proc)
    print(f"\nin-process keras model.predict, one row: {keras_ms:.2f} ms (median of 50)\n")
    worst_p50 = max(one_client_p50.values())
    worst_p99 = max(one_client_p99.values())
    speedup = keras_ms / one_client_p50["keras"]
    rows = [
        ("p50, 1 client (worst model)", f"{worst_p50:.2f} ms", "<= 2 ms", worst_p50 <= 2),
        ("p99, 1 client (worst model)", f"{worst_p99:.2f} ms", "<= 10 ms", worst_p99 <= 10),
        ("keras model.predict / HTTP p50", f"{speedup:.1f}x", ">= 25x", speedup >= 25),
        ("requests/s, best concurrency", f"{best_rps:.0f}", ">= 1500", best_rps >= 1500),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
