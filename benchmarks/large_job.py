"""Large job: 100,000 x 100, 10 classes, dense 256-256 relu + softmax, Adam, batch 256, 5 epochs.

    .venv/bin/python -m benchmarks.large_job

Samples per second of the NumPy engine and of the Keras engine, and the NumPy engine's
achieved GFLOP/s as a fraction of this machine's float32 matmul peak, measured in the same run.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from benchmarks.common import matmul_peak_gflops, print_table
from core.datasets import prepare
from core.spec import parse_spec

SPEC: dict[str, Any] = {
    "name": "large",
    "dataset": {
        "builtin": "make_classification",
        "params": {
            "n_samples": 100_000,
            "n_features": 100,
            "n_informative": 50,
            "n_classes": 10,
            "random_state": 0,
        },
    },
    "preprocessing": {"standardize": True},
    "layers": [
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 256, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
    "loss": "sparse_categorical_crossentropy",
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "epochs": 5,
    "batch_size": 256,
}


def training_flops_per_sample(widths: list[int]) -> int:
    """Multiply-adds x 2 of one training step per sample: forward, weight and input gradients."""
    pairs = list(itertools.pairwise(widths))
    forward = sum(2 * a * b for a, b in pairs)
    weight_grads = forward
    input_grads = forward - 2 * pairs[0][0] * pairs[0][1]  # the input needs no gradient
    return forward + weight_grads + input_grads


def run(engine: str) -> tuple[float, float, int]:
    raw = {**SPEC, "engine": engine}
    spec = parse_spec(raw)
    data = prepare(spec)
    if engine == "numpy":
        from worker.engines.numpy_engine.training import train
    else:
        from worker.engines.keras_engine import train
    seconds = 0.0

    def on_epoch(record: Any) -> None:
        nonlocal seconds
        seconds += record.seconds

    result = train(spec, data, on_epoch)
    assert result.test_accuracy is not None
    return len(data.X_fit) * spec.epochs / seconds, result.test_accuracy, len(data.X_fit)


def main() -> None:
    started = time.perf_counter()
    peak = matmul_peak_gflops()
    numpy_rate, numpy_acc, rows = run("numpy")
    keras_rate, keras_acc, _ = run("keras")
    flops = training_flops_per_sample([100, 256, 256, 10])
    achieved = numpy_rate * flops / 1e9
    print(f"{rows:,} training rows x 5 epochs; float32 matmul peak {peak:.1f} GFLOP/s")
    print(f"numpy engine: {numpy_rate:,.0f} samples/s, test accuracy {numpy_acc:.3f}")
    print(f"keras engine: {keras_rate:,.0f} samples/s, test accuracy {keras_acc:.3f}")
    print_table(
        [
            (
                "numpy / keras samples/s",
                f"{numpy_rate / keras_rate:.2f}x",
                ">= 1.5x",
                numpy_rate / keras_rate >= 1.5,
            ),
            (
                "numpy GFLOP/s / matmul peak",
                f"{achieved:.1f}/{peak:.1f} = {achieved / peak:.0%}",
                ">= 50%",
                achieved / peak >= 0.5,
            ),
        ]
    )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
