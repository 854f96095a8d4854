"""Seed job: NumPy engine vs Keras engine vs a plain Keras script, three seeds each.

    .venv/bin/python -m benchmarks.seed_job [--seeds 0 1 2]

Prints training time and test accuracy per run, the means, and the ratios between them, all
measured side by side in this one process (TensorFlow is warmed up first so its start-up cost
is not charged to whichever runs first).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.datasets import prepare
from core.spec import parse_spec

SEED_JOB = json.loads((Path(__file__).parent.parent / "examples" / "seed_job.json").read_text())


def run_engine(engine: str, seed: int) -> tuple[float, float]:
    """Wall time of the engine's whole train() (build, fit, evaluate) and its test accuracy."""
    raw = copy.deepcopy(SEED_JOB)
    raw.update(engine=engine, seed=seed)
    spec = parse_spec(raw)
    data = prepare(spec)
    if engine == "numpy":
        from worker.engines.numpy_engine.training import train
    else:
        from worker.engines.keras_engine import train
    started = time.perf_counter()
    result = train(spec, data, lambda record: None)
    elapsed = time.perf_counter() - started
    assert result.test_accuracy is not None
    return elapsed, result.test_accuracy


def run_plain_keras(seed: int) -> tuple[float, float]:
    """What a user would write by hand; only `model.fit` is timed."""
    import keras
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(
        n_samples=1000, n_features=20, n_informative=15, n_classes=3, random_state=42
    )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
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
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    model.fit(X_train, y_train, validation_split=0.2, epochs=50, batch_size=32, verbose=0)
    elapsed = time.perf_counter() - started
    accuracy = float(model.evaluate(X_test, y_test, verbose=0)[1])
    keras.backend.clear_session()
    return elapsed, accuracy


def warm_up_tensorflow() -> None:
    from worker.engines.keras_engine import _keras

    keras = _keras()
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((8, 2)), np.zeros(8), epochs=1, verbose=0)
    keras.backend.clear_session()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    warm_up_tensorflow()
    runners = {
        "numpy engine": lambda s: run_engine("numpy", s),
        "keras engine": lambda s: run_engine("keras", s),
        "plain keras fit": run_plain_keras,
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    print(f"{'run':<18}{'seed':>5}{'seconds':>10}{'test acc':>10}")
    for seed in args.seeds:
        for name, run in runners.items():
            seconds, accuracy = run(seed)
            results[name].append((seconds, accuracy))
            print(f"{name:<18}{seed:>5}{seconds:>10.2f}{accuracy:>10.3f}", flush=True)
    print()
    print(f"{'mean':<18}{'':>5}{'seconds':>10}{'test acc':>10}")
    means = {}
    for name, runs in results.items():
        means[name] = (statistics.mean(r[0] for r in runs), statistics.mean(r[1] for r in runs))
        print(f"{name:<18}{'':>5}{means[name][0]:>10.2f}{means[name][1]:>10.3f}")
    plain, numpy_engine, keras_engine = (
        means["plain keras fit"],
        means["numpy engine"],
        means["keras engine"],
    )
    print()
    print(
        f"numpy engine speed-up over plain keras fit: {plain[0] / numpy_engine[0]:.1f}x "
        "(target >= 12x)"
    )
    print(
        f"keras engine time / plain keras fit time:   {keras_engine[0] / plain[0]:.2f} "
        "(target <= 1.15)"
    )
    print(
        f"test accuracy, numpy engine - plain keras:  {numpy_engine[1] - plain[1]:+.3f} "
        "(target within 0.03)"
    )


if __name__ == "__main__":
    main()
