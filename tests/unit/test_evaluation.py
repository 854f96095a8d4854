"""A model's evaluation on its test split (core.evaluation), through the worker and the API."""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from core.db import Database
from core.evaluation import class_indices, classification_metrics, regression_metrics
from core.models import Model
from tests.unit.test_api import ALICE, BOB, assert_error, small_spec, trained_model


def finite_everywhere(value: Any) -> bool:
    """Every number in a JSON value is finite (None allowed)."""
    if isinstance(value, dict):
        return all(finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_everywhere(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def test_a_crafted_confusion_matrix_with_the_original_labels() -> None:
    classes = ["cat", "dog", "eel"]
    y = np.array([0, 0, 0, 1, 1, 2])
    # Predicted: cat, cat, dog | dog, eel | eel
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.3, 0.6],
            [0.1, 0.1, 0.8],
        ]
    )
    got = classification_metrics(y, proba, classes)
    assert got["labels"] == classes
    assert got["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    per_class = {c["label"]: c for c in got["per_class"]}
    assert per_class["cat"] == {
        "label": "cat",
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
        "support": 3,
    }
    assert per_class["dog"]["precision"] == pytest.approx(0.5)
    assert per_class["eel"]["recall"] == 1.0 and per_class["eel"]["support"] == 1
    assert got["accuracy"] == pytest.approx(4 / 6)
    f1 = [0.8, 0.5, 2 / 3]
    assert got["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert got["weighted_f1"] == pytest.approx((3 * f1[0] + 2 * f1[1] + f1[2]) / 6)
    expected_log_loss = -np.mean(np.log([0.8, 0.6, 0.2, 0.8, 0.3, 0.8]))
    assert got["log_loss"] == pytest.approx(expected_log_loss)
    assert got["roc_auc_average"] == "ovr_macro" and 0.5 < got["roc_auc"] <= 1.0


def test_binary_auc_and_an_absent_class_gives_null_not_nan() -> None:
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    got = classification_metrics(y, proba, [3, 7])
    assert got["roc_auc_average"] == "binary" and got["roc_auc"] == 1.0
    assert got["confusion_matrix"] == [[1, 1], [0, 2]]

    absent = classification_metrics(np.array([0, 0, 1]), np.full((3, 3), 1 / 3), ["a", "b", "c"])
    assert absent["roc_auc"] is None
    assert absent["per_class"][2]["support"] == 0 and absent["per_class"][2]["precision"] == 0.0
    text = json.dumps(absent, allow_nan=False)  # raises on NaN or Infinity
    assert "NaN" not in text


def test_class_indices_decode_every_encoding() -> None:
    assert class_indices(np.array([2, 0, 1]), "sparse_categorical_crossentropy").tolist() == [
        2,
        0,
        1,
    ]
    assert class_indices(np.eye(3)[[1, 2]], "categorical_crossentropy").tolist() == [1, 2]
    assert class_indices(np.array([[1.0], [0.0]]), "binary_crossentropy").tolist() == [1, 0]


def test_regression_metrics() -> None:
    actual = np.array([[1.0], [2.0], [3.0], [4.0]])
    predicted = np.array([[1.5], [2.0], [2.0], [4.5]])  # residuals 0.5, 0, -1, 0.5
    got = regression_metrics(actual, predicted)
    assert got["mae"] == pytest.approx(0.5)
    assert got["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1 + 0.25) / 4))
    assert got["r2"] == pytest.approx(1 - 1.5 / 5.0)
    assert got["residuals"]["mean"] == pytest.approx(0.0)
    assert got["residuals"]["min"] == -1.0 and got["residuals"]["max"] == 0.5
    assert got["residuals"]["median"] == pytest.approx(0.25)
    assert sum(got["residual_histogram"]["counts"]) == 4
    assert got["points"][2] == [3.0, 2.0]
    # Non-finite outputs are left out, and one row has no R² (null, not NaN).
    one = regression_metrics(np.array([[1.0], [2.0]]), np.array([[np.inf], [2.5]]))
    assert one["n_samples"] == 1 and one["r2"] is None and one["mae"] == 0.5
    json.dumps(one, allow_nan=False)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"loss": "categorical_crossentropy"},
        {
            "dataset": {
                "builtin": "make_regression",
                "params": {"n_samples": 120, "n_features": 5},
            },
            "layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dense", "units": 1},
            ],
            "loss": "mse",
        },
    ],
    ids=["sparse", "categorical", "regression"],
)
def test_every_job_stores_its_evaluation(
    client: FlaskClient, database: Database, changes: dict[str, Any]
) -> None:
    model_id = trained_model(client, database, small_spec(**changes))
    response = client.get(f"/v1/models/{model_id}", headers=ALICE)
    assert "NaN" not in response.get_data(as_text=True)
    model = response.get_json()
    evaluation = model["evaluation"]
    assert finite_everywhere(evaluation)
    job = client.get(f"/v1/jobs/{model['job_id']}", headers=ALICE).get_json()
    if model["task"] == "classification":
        assert evaluation["labels"] == model["classes"] == [0, 1, 2]
        matrix = np.array(evaluation["confusion_matrix"])
        assert matrix.sum() == evaluation["n_samples"] == 200  # 1000 rows, test_size 0.2
        # The runtime's accuracy on the test split is the engine's own test accuracy.
        assert np.trace(matrix) / matrix.sum() == pytest.approx(job["metrics"]["test_accuracy"])
        assert evaluation["log_loss"] == pytest.approx(job["metrics"]["test_loss"], rel=1e-4)
    else:
        assert evaluation["task"] == "regression" and evaluation["n_samples"] == 24
        assert evaluation["rmse"] ** 2 == pytest.approx(job["metrics"]["test_loss"], rel=1e-4)

    png = client.get(f"/v1/models/{model_id}/evaluation.png", headers=ALICE)
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data.startswith(b"\x89PNG") and png.headers["ETag"]
    again = client.get(
        f"/v1/models/{model_id}/evaluation.png",
        headers={**ALICE, "If-None-Match": png.headers["ETag"]},
    )
    assert again.status_code == 304
    assert_error(client.get(f"/v1/models/{model_id}/evaluation.png", headers=BOB), 404, "not_found")


def test_a_model_from_before_evaluations_answers_null(
    client: FlaskClient, database: Database
) -> None:
    model_id = trained_model(client, database, small_spec())
    with database.begin() as session:
        session.execute(update(Model).where(Model.id == model_id).values(evaluation=None))
    model = client.get(f"/v1/models/{model_id}", headers=ALICE).get_json()
    assert "evaluation" in model and model["evaluation"] is None
    response = client.get(f"/v1/models/{model_id}/evaluation.png", headers=ALICE)
    assert_error(response, 404, "no_evaluation")


def test_export_npz_and_onnx_through_the_api(client: FlaskClient, database: Database) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model_id = trained_model(client, database, small_spec())

    npz = client.get(f"/v1/models/{model_id}/export?format=npz", headers=ALICE)
    assert npz.status_code == 200
    assert f"model-{model_id}.npz" in npz.headers["Content-Disposition"]
    with np.load(io.BytesIO(npz.data), allow_pickle=False) as arrays:
        meta = json.loads(arrays["__meta__"].tobytes().decode())
        assert meta["classes"] == [0, 1, 2] and arrays["layers.0.kernel"].shape == (20, 64)

    exported = client.get(f"/v1/models/{model_id}/export?format=onnx", headers=ALICE)
    assert exported.status_code == 200 and exported.headers["X-ONNX-Opset"] == "17"
    proto = onnx.load_from_string(exported.data)
    onnx.checker.check_model(proto)
    rows = np.random.default_rng(0).normal(size=(16, 20)).astype(np.float32)
    session = ort.InferenceSession(exported.data, providers=["CPUExecutionProvider"])
    probabilities, label_index = session.run(["probabilities", "label_index"], {"input": rows})
    answer = client.post(
        f"/v1/models/{model_id}/predict", json={"instances": rows.tolist()}, headers=ALICE
    ).get_json()
    np.testing.assert_allclose(probabilities, answer["probabilities"], atol=1e-5)
    assert label_index.tolist() == answer["predictions"]  # classes are 0, 1, 2
    assert client.get(f"/v1/models/{model_id}/export", headers=ALICE).data == exported.data

    error = assert_error(
        client.get(f"/v1/models/{model_id}/export?format=pmml", headers=ALICE),
        422,
        "validation_error",
    )
    assert "'onnx'" in error["message"] and "'npz'" in error["message"]
    assert error["details"][0]["field"] == "format"
    response = client.get(f"/v1/models/{model_id}/export?format=onnx", headers=BOB)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_scikit_learns(n_classes: int, seed: int) -> None:
    """The NumPy metrics are scikit-learn's: every number, on random splits with tied scores
    (probabilities rounded to 1 decimal) and classes never predicted."""
    from sklearn import metrics

    rng = np.random.default_rng(seed)
    n = 57
    y = rng.integers(0, n_classes, n)
    y[:n_classes] = np.arange(n_classes)  # every class present: ROC AUC is defined
    raw = rng.random((n, n_classes)) ** 3
    proba = np.round(raw / raw.sum(axis=1, keepdims=True), 1) + 1e-3
    proba /= proba.sum(axis=1, keepdims=True)
    proba[:, -1] *= 0.01 if seed == 2 else 1.0  # the last class is (almost) never predicted
    proba /= proba.sum(axis=1, keepdims=True)
    labels = list(range(n_classes))
    ours = classification_metrics(y, proba, [f"c{i}" for i in labels])
    predicted = proba.argmax(axis=1)
    p, r, f, s = metrics.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    assert (
        ours["confusion_matrix"] == metrics.confusion_matrix(y, predicted, labels=labels).tolist()
    )
    for i, row in enumerate(ours["per_class"]):
        assert row["precision"] == pytest.approx(p[i])
        assert row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i])
        assert row["support"] == s[i]
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(y, predicted))
    for average in ("macro", "weighted"):
        expected = metrics.f1_score(y, predicted, labels=labels, average=average, zero_division=0)
        assert ours[f"{average}_f1"] == pytest.approx(expected)
    eps = float(np.finfo(np.float32).eps)
    clipped = np.clip(proba, eps, 1 - eps)
    clipped /= clipped.sum(axis=1, keepdims=True)
    assert ours["log_loss"] == pytest.approx(metrics.log_loss(y, clipped, labels=labels))
    if n_classes == 2:
        auc = metrics.roc_auc_score(y, proba[:, 1])
    else:
        scores = proba / proba.sum(axis=1, keepdims=True)  # as the old code gave them
        auc = metrics.roc_auc_score(y, scores, multi_class="ovr", average="macro", labels=labels)
    assert ours["roc_auc"] == pytest.approx(auc)


@pytest.mark.parametrize("targets", [1, 3])
def test_regression_metrics_equal_scikit_learns(targets: int) -> None:
    from sklearn import metrics

    rng = np.random.default_rng(targets)
    actual = rng.normal(size=(40, targets))
    predicted = actual + rng.normal(scale=0.3, size=actual.shape)
    if targets == 3:
        actual[:, 1] = 2.0  # a constant target: scikit-learn's R² gives it 0 (predicted off)
        actual[:, 2] = predicted[:, 2] = 5.0  # and 1 when predicted exactly
    ours = regression_metrics(actual, predicted)
    assert ours["mae"] == pytest.approx(metrics.mean_absolute_error(actual, predicted))
    assert ours["rmse"] == pytest.approx(math.sqrt(metrics.mean_squared_error(actual, predicted)))
    assert ours["r2"] == pytest.approx(metrics.r2_score(actual, predicted))
