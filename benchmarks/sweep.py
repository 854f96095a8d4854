"""Sweeps: three figures, each measured side by side in one run.

    .venv/bin/python -m benchmarks.sweep [--keras-runs 12]

(a) The compare-optimizers sweep (the seed job with SGD 0.01, SGD + momentum 0.9, RMSprop 0.001
    and Adam 0.001, three seeds each: 12 trials) through the service with 2 worker processes,
    POST -> sweep succeeded, against a plain Keras script looping over the same 12 runs (TF
    imported and warmed up first, so its start-up is not charged to the script). Target: the
    service >= 10x faster, with the same best optimizer.
(b) Dispatch overhead: a sweep of 200 one-epoch tiny trials, POST -> succeeded, in trials/s with
    2 worker processes. Target >= 30.
(c) A median pruner on a 48-trial random search over learning rate and width, against the same
    search unpruned (random search is seeded per trial number, so both try the same 48
    candidates): total epochs trained <= 50 % of the unpruned search's, best objective within
    2 % of it.

Real processes: two Celery workers (one pool process each), Redis (or the embedded broker),
SQLite; the API in this process.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from benchmarks.common import print_table
from benchmarks.stack import KEY, SEED, prepare_database, worker_env
from core.db import Database
from core.models import Job, Sweep
from core.settings import Settings
from service.app import create_app
from tests.support import WorkerProcess

HEADERS = {"Authorization": f"Bearer {KEY}"}
TERMINAL = ("succeeded", "failed", "cancelled")
OPTIMIZERS: list[dict[str, Any]] = [
    {"type": "sgd", "learning_rate": 0.01},
    {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9},
    {"type": "rmsprop", "learning_rate": 0.001},
    {"type": "adam", "learning_rate": 0.001},
]
SEEDS = [0, 1, 2]
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


def optimizer_name(optimizer: dict[str, Any]) -> str:
    if optimizer["type"] == "sgd" and optimizer.get("momentum"):
        return "sgd+momentum"
    return str(optimizer["type"])


def compare_optimizers_body() -> dict[str, Any]:
    return {
        "name": "compare-optimizers",
        "spec": copy.deepcopy(SEED),
        "space": {"optimizer": {"choices": OPTIMIZERS}, "seed": {"choices": SEEDS}},
        "strategy": "grid",
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "max_parallel": 2,
    }


def run_sweep(
    client: Any, db: Database, body: dict[str, Any], timeout: float = 600
) -> tuple[float, Any]:
    """POST the sweep, wait until it has ended (its row, read every 10 ms: a full GET of a
    200-trial leaderboard at that rate would take a core from the workers), then GET it."""
    started = time.perf_counter()
    answer = client.post("/v1/sweeps", json=body, headers=HEADERS)
    assert answer.status_code == 202, answer.get_json()
    sweep_id = answer.get_json()["id"]
    while True:
        with db.session() as session:
            status = session.scalar(select(Sweep.status).where(Sweep.id == sweep_id))
        if status in TERMINAL:
            elapsed = time.perf_counter() - started
            return elapsed, client.get(f"/v1/sweeps/{sweep_id}", headers=HEADERS).get_json()
        assert time.perf_counter() - started < timeout, status
        time.sleep(0.01)


def plain_keras_loop(runs: int) -> tuple[float, list[tuple[str, int, float]]]:
    """What a user would write by hand: the same 12 runs, one after another, timed whole."""
    import keras
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    builders = {
        "sgd": lambda o: keras.optimizers.SGD(learning_rate=o["learning_rate"]),
        "sgd+momentum": lambda o: keras.optimizers.SGD(
            learning_rate=o["learning_rate"], momentum=o["momentum"]
        ),
        "rmsprop": lambda o: keras.optimizers.RMSprop(learning_rate=o["learning_rate"]),
        "adam": lambda o: keras.optimizers.Adam(learning_rate=o["learning_rate"]),
    }
    plan = [(o, s) for o in OPTIMIZERS for s in SEEDS][:runs]
    results = []
    started = time.perf_counter()
    for optimizer, seed in plan:
        X, y = make_classification(
            n_samples=1000, n_features=20, n_informative=15, n_classes=3, random_state=42
        )
        X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=seed)
        X_train = StandardScaler().fit(X_train).transform(X_train)
        keras.utils.set_random_seed(seed)
        layers: list[Any] = [keras.Input(shape=(20,))]
        for units, rate in ((64, 0.3), (32, 0.3), (16, 0.2)):
            layers += [
                keras.layers.Dense(units, activation="relu"),
                keras.layers.BatchNormalization(),
                keras.layers.Dropout(rate),
            ]
        layers.append(keras.layers.Dense(3, activation="softmax"))
        model = keras.Sequential(layers)
        name = optimizer_name(optimizer)
        model.compile(
            optimizer=builders[name](optimizer),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        history = model.fit(
            X_train, y_train, validation_split=0.2, epochs=50, batch_size=32, verbose=0
        )
        results.append((name, seed, float(history.history["val_loss"][-1])))
        keras.backend.clear_session()
    return time.perf_counter() - started, results


def warm_up_tensorflow() -> None:
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((8, 2)), np.zeros(8), epochs=1, verbose=0)
    keras.backend.clear_session()


def best_by_optimizer(rows: list[tuple[str, float]]) -> tuple[str, str]:
    """(the best single run's optimizer, the optimizer with the best mean over its seeds)."""
    best_run = min(rows, key=lambda r: r[1])[0]
    means: dict[str, list[float]] = {}
    for name, value in rows:
        means.setdefault(name, []).append(value)
    best_mean = min(means, key=lambda n: statistics.mean(means[n]))
    return best_run, best_mean


def plain_jobs_per_s(client: Any, db: Database, count: int) -> float:
    """The same tiny job POSTed `count` times as plain jobs: the stack's own rate, for
    reference (what the sweep's controller adds is the difference)."""
    started = time.perf_counter()
    ids = []
    for _ in range(count):
        answer = client.post("/v1/jobs", json=TINY, headers=HEADERS)
        assert answer.status_code == 202, answer.get_json()
        ids.append(answer.get_json()["id"])
    while True:
        with db.session() as session:
            left = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.in_(ids), Job.finished_at.is_(None))
            )
        if not left:
            return count / (time.perf_counter() - started)
        time.sleep(0.01)


def pruning_body(pruner: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SEED)
    spec["optimizer"] = {"type": "adam"}
    return {
        "name": "pruned" if pruner else "unpruned",
        "spec": spec,
        "space": {
            "optimizer.learning_rate": {"low": 0.00005, "high": 0.05, "log": True},
            "layers[0].units": {"low": 4, "high": 128, "type": "int"},
        },
        "strategy": "random",
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "max_trials": 48,
        "max_parallel": 2,
        "pruner": pruner,
        "seed": 1,
    }


TINY_SWEEP: dict[str, Any] = {
    "name": "tiny",
    "spec": TINY,
    "space": {"seed": {"choices": list(range(200))}},
    "strategy": "grid",
    "objective": {"metric": "loss"},
    "max_parallel": 16,
}


def only_b(client: Any, db: Database) -> None:
    """Figure (b) alone: a 20-trial warm-up sweep, then the 200-trial sweep and 200 plain jobs."""
    run_sweep(
        client,
        db,
        {**TINY_SWEEP, "name": "warm-up", "space": {"seed": {"choices": list(range(20))}}},
    )
    tiny_s, tiny_sweep = run_sweep(client, db, TINY_SWEEP)
    assert tiny_sweep["status"] == "succeeded", tiny_sweep["progress"]
    trials_per_s = 200 / tiny_s
    jobs_per_s = plain_jobs_per_s(client, db, 200)
    tiny_train = sum(t["seconds"] for t in tiny_sweep["leaderboard"])
    print(
        f"(b) 200 one-epoch trials in {tiny_s:.2f} s (their own run time {tiny_train:.2f} s); "
        f"the same 200 as plain jobs on this stack: {jobs_per_s:.1f} jobs/s\n"
    )
    print_table([("(b) tiny trials/s", f"{trials_per_s:.1f}", ">= 30", trials_per_s >= 30)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras-runs", type=int, default=12, help="runs of the Keras loop")
    parser.add_argument(
        "--only-b",
        action="store_true",
        help="figure (b) alone (the tiny-trial rate and the plain-job rate), for a quick run",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url, db = prepare_database(tmp)
        env = worker_env(url, tmp, TENANT_MAX_RUNNING="0")
        broker = env["BROKER_URL"]
        workers = [WorkerProcess(env, tmp / f"worker{i}.log") for i in range(2)]
        try:
            for worker in workers:
                worker.wait_ready()
            client = create_app(Settings.from_env(env)).test_client()
            if args.only_b:
                only_b(client, db)
                return
            run_sweep(client, db, {**compare_optimizers_body(), "name": "warm-up"})  # warm pools

            service_s, sweep = run_sweep(client, db, compare_optimizers_body())
            assert sweep["status"] == "succeeded", sweep
            train_s = sum(t["seconds"] for t in sweep["leaderboard"]) / 2
            service_rows = [
                (optimizer_name(t["params"]["optimizer"]), t["objective"])
                for t in sweep["leaderboard"]
            ]

            tiny_s, tiny_sweep = run_sweep(client, db, TINY_SWEEP)
            assert tiny_sweep["status"] == "succeeded", tiny_sweep["progress"]
            trials_per_s = 200 / tiny_s
            jobs_per_s = plain_jobs_per_s(client, db, 200)

            plain_s, pruned = run_sweep(client, db, pruning_body(None))
            prune_s, pruning = run_sweep(client, db, pruning_body({"type": "median"}))
        finally:
            for worker in workers:
                worker.stop()
    warm_up_tensorflow()
    keras_s, keras_results = plain_keras_loop(args.keras_runs)
    keras_rows = [(name, value) for name, _, value in keras_results]
    if args.keras_runs < 12:  # a shorter loop, scaled to 12 runs (said so below)
        keras_s *= 12 / args.keras_runs

    service_best = best_by_optimizer(service_rows)
    keras_best = best_by_optimizer(keras_rows)
    speedup = keras_s / service_s
    epochs_all = sum(t["epochs"] for t in pruned["leaderboard"])
    epochs_pruned = sum(t["epochs"] for t in pruning["leaderboard"])
    n_pruned = sum(
        1 for t in pruning["leaderboard"] if t["error"] and t["error"]["code"] == "pruned"
    )
    best_all, best_pruned = pruned["best"]["value"], pruning["best"]["value"]
    gap = (best_pruned - best_all) / abs(best_all)

    print(f"broker: {broker.split('://')[0]}; database: SQLite; 2 worker processes\n")
    print("(a) compare optimizers, 12 trials (best single run / best mean over 3 seeds):")
    print(
        f"    service {service_s:6.2f} s   best {service_best[0]} / {service_best[1]}   "
        f"(trials' own training time {train_s:.2f} s over 2 workers)"
    )
    scaled = "" if args.keras_runs >= 12 else f" (timed {args.keras_runs} runs, scaled to 12)"
    print(f"    keras   {keras_s:6.2f} s   best {keras_best[0]} / {keras_best[1]}{scaled}")
    for name in ("sgd", "sgd+momentum", "rmsprop", "adam"):
        ours = statistics.mean(v for n, v in service_rows if n == name)
        theirs = [v for n, v in keras_rows if n == name]
        mean = f"{statistics.mean(theirs):.4f}" if theirs else "-"
        print(f"    mean val_loss {name:<13} service {ours:.4f}  keras {mean}")
    tiny_train = sum(t["seconds"] for t in tiny_sweep["leaderboard"])
    print(
        f"(b) 200 one-epoch trials in {tiny_s:.2f} s (their own run time {tiny_train:.2f} s); "
        f"the same 200 as plain jobs on this stack: {jobs_per_s:.1f} jobs/s"
    )
    print(
        f"(c) 48-trial random search: unpruned {epochs_all} epochs in {plain_s:.1f} s, best "
        f"{best_all:.4f}; median pruner {epochs_pruned} epochs in {prune_s:.1f} s "
        f"({n_pruned} pruned), best {best_pruned:.4f}\n"
    )
    same = service_best[1] == keras_best[1] or service_best[0] == keras_best[0]
    print_table(
        [
            ("(a) sweep vs Keras loop speed-up", f"{speedup:.1f}x", ">= 10x", speedup >= 10),
            (
                "(a) best optimizer (mean of 3)",
                service_best[1],
                f"= {keras_best[1]}",
                same,
            ),
            ("(b) tiny trials/s", f"{trials_per_s:.1f}", ">= 30", trials_per_s >= 30),
            (
                "(c) epochs, pruned / unpruned",
                f"{epochs_pruned / epochs_all:.0%}",
                "<= 50%",
                epochs_pruned <= 0.5 * epochs_all,
            ),
            ("(c) best objective gap", f"{gap:+.2%}", "within 2%", abs(gap) <= 0.02),
        ]
    )


if __name__ == "__main__":
    main()
