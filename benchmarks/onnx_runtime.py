"""In-process inference: onnxruntime on the exported ONNX model vs our NumPy runtime.

    .venv/bin/python -m benchmarks.onnx_runtime [--epochs 5] [--repeat 2000]

The seed job's network (dense 64-32-16 with batch norm and dropout, softmax over 3 classes) is
trained briefly with the NumPy engine (its weights do not change the cost), exported with
core.onnx_export, and both run the same rows in this process: one row, and a batch of 1,000.
Figures are medians of `--repeat` calls (one row) or of 200 calls (1,000 rows), after a warm-up,
the three timed in turn call by call; each side's kernels get `--threads` threads (default 1:
onnxruntime's intra-op pool and NumPy's BLAS alike).

Our side is measured twice: `Predictor.outputs` (the network's probabilities, what onnxruntime
gives back) and `Predictor.predict` (the whole answer of the predict route: probabilities as
lists and labels). onnxruntime runs on its CPU provider with default graph optimizations.
Target: our one-row `outputs` within 2x of onnxruntime's one-row `run`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from core.artifact import Artifact
from core.datasets import prepare
from core.onnx_export import OPSET, export_onnx
from core.runtime import Predictor
from core.spec import parse_spec
from worker.engines.numpy_engine.training import train
from worker.jobs import build_artifact

SEED_JOB = json.loads((Path(__file__).parent.parent / "examples" / "seed_job.json").read_text())
TARGET_RATIO = 2.0


def interleaved_medians(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn call by call (so a busy moment
    of the machine falls on all of them alike), after a warm-up."""
    for _ in range(min(repeat, 100)):  # warm-up: caches, onnxruntime's first-run allocations
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def seed_artifact(epochs: int) -> Artifact:
    raw = copy.deepcopy(SEED_JOB)
    raw.update(engine="numpy", epochs=epochs)
    spec = parse_spec(raw)
    data = prepare(spec)
    result = train(spec, data, lambda record: None)
    return Artifact.from_bytes(build_artifact(spec, data, result).to_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--repeat", type=int, default=2000, help="one-row calls timed (2000)")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for each side's kernels (default 1)"
    )
    args = parser.parse_args()

    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    artifact = seed_artifact(args.epochs)
    predictor = Predictor(artifact)
    blob = export_onnx(artifact)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    threadpool_limits(args.threads)  # NumPy's BLAS: as many threads as onnxruntime's pool
    rng = np.random.default_rng(0)
    n_features = predictor.n_features
    one = rng.normal(size=(1, n_features)).astype(np.float32)
    batch = rng.normal(size=(1000, n_features)).astype(np.float32)
    # Same rows, same answers (the parity the tests check, here on the benchmark's rows too).
    for rows in (one, batch):
        ours = predictor.outputs(rows)
        theirs = session.run(["probabilities"], {"input": rows})[0]
        assert np.abs(ours - theirs).max() < 1e-5

    figures: dict[str, dict[str, float]] = {}
    for label, rows, repeat in (("1 row", one, args.repeat), ("1,000 rows", batch, 200)):
        figures[label] = interleaved_medians(
            {
                "onnxruntime run": partial(session.run, None, {"input": rows}),
                "ours: outputs": partial(predictor.outputs, rows),
                "ours: predict": partial(predictor.predict, rows),
            },
            repeat,
        )
    print(
        f"seed-job network ({n_features} features, {len(artifact.meta['layers'])} layers), "
        f"ONNX opset {OPSET}, onnxruntime {ort.__version__}, {len(blob):,} bytes; "
        f"{args.threads} thread(s) each"
    )
    print(
        f"{'rows':<12}{'onnxruntime run':>18}{'ours: outputs':>16}{'ours: predict':>16}"
        f"{'outputs / ort':>15}{'predict / ort':>15}"
    )
    for label, row in figures.items():
        base = row["onnxruntime run"]
        print(
            f"{label:<12}"
            + "".join(f"{row[name] * 1e6:>14.1f} µs" for name in row)
            + f"{row['ours: outputs'] / base:>14.2f}x{row['ours: predict'] / base:>14.2f}x"
        )
    ratio = figures["1 row"]["ours: outputs"] / figures["1 row"]["onnxruntime run"]
    print()
    print_table(
        [
            (
                "one row: ours / onnxruntime",
                f"{ratio:.2f}x",
                f"≤ {TARGET_RATIO:g}x",
                ratio <= TARGET_RATIO,
            )
        ]
    )


if __name__ == "__main__":
    main()
