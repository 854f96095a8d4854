"""Evaluation and export through HTTP, with models trained by a real worker on both engines."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pytest

from core.runtime import Predictor
from tests.conftest import auth
from tests.integration.conftest import Stack, submit
from tests.support import wait_for_job

pytestmark = pytest.mark.integration
ALICE, BOB = auth("alice"), auth("bob")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CLASSIFICATION = {
    "dataset": {"builtin": "wine"},
    "preprocessing": {"standardize": True},
    "layers": [
        {"type": "dense", "units": 16, "activation": "elu"},
        {"type": "batch_norm"},
        {"type": "dropout", "rate": 0.1},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ],
    "loss": "categorical_crossentropy",
    "optimizer": {"type": "adam", "learning_rate": 0.01},
    "epochs": 15,
}
REGRESSION = {
    "dataset": {"builtin": "diabetes"},
    "preprocessing": {"standardize": True},
    "layers": [
        {"type": "dense", "units": 16, "activation": "gelu"},
        {"type": "batch_norm"},
        {"type": "dense", "units": 1},
    ],
    "loss": "mse",
    "optimizer": {"type": "adam", "learning_rate": 0.05},
    "epochs": 15,
}


def finite_json(text: str) -> Any:
    """Parse JSON refusing NaN and ±Infinity."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"bare {name} in the JSON")

    return json.loads(text, parse_constant=refuse)


def train(stack: Stack, spec: dict[str, Any], engine: str) -> dict[str, Any]:
    job = submit(stack, {**spec, "engine": engine, "name": f"export {engine}"})
    done = wait_for_job(stack.client, job["id"], ALICE, timeout=300)
    assert done["status"] == "succeeded", done["error"]
    return done


@pytest.mark.parametrize("engine", ["numpy", "keras"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_evaluate_plot_and_export_a_trained_model(stack: Stack, engine: str, task: str) -> None:
    spec = CLASSIFICATION if task == "classification" else REGRESSION
    done = train(stack, spec, engine)
    model_id = done["model_id"]
    response = stack.client.get(f"/v1/models/{model_id}", headers=ALICE)
    model = finite_json(response.get_data(as_text=True))
    evaluation = model["evaluation"]
    assert evaluation["task"] == task and evaluation["split"] == "test"
    if task == "classification":
        assert evaluation["labels"] == model["classes"] == [0, 1, 2]
        matrix = np.array(evaluation["confusion_matrix"])
        assert matrix.shape == (3, 3) and matrix.sum() == evaluation["n_samples"] == 36
        accuracy = np.trace(matrix) / matrix.sum()
        assert accuracy == pytest.approx(done["metrics"]["test_accuracy"], abs=1e-9)
        assert [c["support"] for c in evaluation["per_class"]] == matrix.sum(axis=1).tolist()
        assert 0 <= evaluation["macro_f1"] <= 1 and evaluation["log_loss"] > 0
        assert evaluation["roc_auc_average"] == "ovr_macro" and evaluation["roc_auc"] > 0.5
    else:
        assert evaluation["n_samples"] == 89  # 442 rows, test_size 0.2
        assert evaluation["rmse"] == pytest.approx(math.sqrt(done["metrics"]["test_loss"]), 1e-3)
        assert evaluation["mae"] <= evaluation["rmse"] and evaluation["r2"] is not None

    png = stack.client.get(f"/v1/models/{model_id}/evaluation.png", headers=ALICE)
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")
    assert stack.client.get(f"/v1/models/{model_id}/evaluation.png", headers=BOB).status_code == 404

    rows = np.random.default_rng(7).normal(size=(40, model["n_features"]))
    rows = (rows * 2 + 1).astype(np.float32)  # what a client sends: unscaled features
    answer = stack.client.post(
        f"/v1/models/{model_id}/predict", json={"instances": rows.tolist()}, headers=ALICE
    ).get_json()

    exported = stack.client.get(f"/v1/models/{model_id}/export?format=onnx", headers=ALICE)
    assert exported.status_code == 200 and exported.headers["X-ONNX-Opset"] == "17"
    onnx.checker.check_model(onnx.load_from_string(exported.data), full_check=True)
    session = ort.InferenceSession(exported.data, providers=["CPUExecutionProvider"])
    outputs = dict(
        zip(
            [o.name for o in session.get_outputs()], session.run(None, {"input": rows}), strict=True
        )
    )
    if task == "classification":
        np.testing.assert_allclose(outputs["probabilities"], answer["probabilities"], atol=1e-5)
        assert outputs["label_index"].tolist() == answer["predictions"]
    else:
        # float32 values in the thousands agree to float32's precision, not to 1e-5 absolute.
        np.testing.assert_allclose(
            outputs["predictions"], answer["predictions"], rtol=1e-5, atol=1e-5
        )

    npz = stack.client.get(f"/v1/models/{model_id}/export?format=npz", headers=ALICE)
    assert npz.status_code == 200
    with np.load(io.BytesIO(npz.data), allow_pickle=False) as stored:
        meta = json.loads(stored["__meta__"].tobytes().decode())
    assert meta["engine"] == engine and meta["task"] == task
    again = Predictor.from_bytes(npz.data).predict(rows)
    key = "probabilities" if task == "classification" else "predictions"
    np.testing.assert_allclose(again[key], answer[key], atol=1e-9)

    bad = stack.client.get(f"/v1/models/{model_id}/export?format=pt", headers=ALICE)
    assert bad.status_code == 422 and "onnx" in bad.get_json()["error"]["message"]
