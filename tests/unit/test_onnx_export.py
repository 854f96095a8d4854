"""ONNX export (core.onnx_export): onnx.checker accepts every export, and onnxruntime on it gives
what the predict route gives (core.runtime) within 1e-5, for models trained by both engines,
every activation of the registry and every loss."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from core.activations import ACTIVATIONS
from core.artifact import Artifact
from core.datasets import prepare
from core.losses import LOSSES
from core.onnx_export import ACTIVATIONS as ONNX_ACTIVATIONS
from core.onnx_export import OPSET, export_onnx, to_onnx
from core.runtime import Predictor
from core.spec import parse_spec
from tests.support import raw_features
from worker.engines.numpy_engine.training import train as numpy_train
from worker.jobs import build_artifact

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

OUTPUTS: dict[str, tuple[str, int, str, dict[str, Any]]] = {
    "mse": ("linear", 2, "make_regression", {"n_targets": 2, "n_features": 6}),
    "binary_crossentropy": ("sigmoid", 1, "make_classification", {"n_features": 6}),
    "categorical_crossentropy": (
        "softmax",
        3,
        "make_classification",
        {"n_features": 6, "n_classes": 3, "n_informative": 4},
    ),
    "sparse_categorical_crossentropy": (
        "softmax",
        3,
        "make_classification",
        {"n_features": 6, "n_classes": 3, "n_informative": 4},
    ),
}
HIDDEN = [
    *({"type": name} for name in ACTIVATIONS if name != "softmax"),
    {"type": "leaky_relu", "negative_slope": 0.05},
]


def keras_train() -> Callable[..., Any]:
    keras_engine = pytest.importorskip("worker.engines.keras_engine")
    return keras_engine.train


TRAINERS: dict[str, Callable[[], Callable[..., Any]]] = {
    "numpy": lambda: numpy_train,
    "keras": keras_train,
}


def spec_for(
    engine: str, loss: str, hidden: dict[str, Any] | str = "relu", standardize: bool = True
) -> Any:
    activation, width, dataset, params = OUTPUTS[loss]
    return parse_spec(
        {
            "engine": engine,
            "dataset": {"builtin": dataset, "params": {"n_samples": 160, **params}},
            "preprocessing": {"standardize": standardize},
            "layers": [
                {"type": "dense", "units": 8, "activation": hidden},
                {"type": "batch_norm", "momentum": 0.5},
                {"type": "dropout", "rate": 0.2},
                {"type": "dense", "units": 6, "activation": hidden},
                {"type": "dense", "units": 5},  # linear: the next batch norm folds back into it
                {"type": "batch_norm", "momentum": 0.5},
                {"type": "dense", "units": width, "activation": activation},
            ],
            "loss": loss,
            "optimizer": {"type": "adam", "learning_rate": 0.01},
            "epochs": 2,
            "batch_size": 16,
            "seed": 5,
        }
    )


def trained(spec: Any) -> tuple[Artifact, Any]:
    data = prepare(spec)
    result = TRAINERS[spec.engine]()(spec, data, lambda r: None)
    return Artifact.from_bytes(build_artifact(spec, data, result).to_bytes()), data


def assert_onnx_matches_runtime(artifact: Artifact, rows: np.ndarray) -> None:
    blob = export_onnx(artifact)
    proto = onnx.load_from_string(blob)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET
    kinds = {node.op_type for node in proto.graph.node}
    assert not kinds & {"BatchNormalization", "Dropout"}
    dense = sum(1 for layer in artifact.meta["layers"] if layer["type"] == "dense")
    assert sum(1 for node in proto.graph.node if node.op_type == "Gemm") == dense

    rows = rows.astype(np.float32)
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    answer = Predictor(artifact).predict(rows)  # what POST /v1/models/{id}/predict answers
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"input": rows}), strict=True))
    if artifact.meta["task"] == "classification":
        assert names == ["probabilities", "label_index"]
        np.testing.assert_allclose(got["probabilities"], answer["probabilities"], atol=1e-5)
        classes = json.loads({p.key: p.value for p in proto.metadata_props}["classes"])
        assert classes == artifact.meta["classes"]
        assert [classes[i] for i in got["label_index"]] == answer["predictions"]
    else:
        assert names == ["predictions"]
        np.testing.assert_allclose(got["predictions"], answer["predictions"], atol=1e-5)


def test_every_activation_has_an_onnx_form() -> None:
    assert set(ONNX_ACTIVATIONS) == set(ACTIVATIONS.names)


def case_id(activation: dict[str, Any]) -> str:
    return "-".join(str(v) for v in activation.values())


@pytest.mark.parametrize("engine", sorted(TRAINERS))
@pytest.mark.parametrize("hidden", HIDDEN, ids=case_id)
def test_each_activation_on_both_engines(engine: str, hidden: dict[str, Any]) -> None:
    spec = spec_for(engine, "sparse_categorical_crossentropy", hidden)
    artifact, data = trained(spec)
    # Beyond the training range too: every activation's whole shape (and softmax's shift).
    rows = raw_features(data, np.concatenate([data.X_test, data.X_test * 3]))
    assert_onnx_matches_runtime(artifact, rows)


@pytest.mark.parametrize("engine", sorted(TRAINERS))
@pytest.mark.parametrize("loss", LOSSES.names)
def test_each_loss_on_both_engines(engine: str, loss: str) -> None:
    artifact, data = trained(spec_for(engine, loss, "tanh"))
    assert_onnx_matches_runtime(artifact, raw_features(data, data.X_test))


def test_without_standardization_and_with_one_regression_target() -> None:
    spec = parse_spec(
        {
            "dataset": {"builtin": "diabetes"},
            "preprocessing": {"standardize": False},
            "layers": [
                {"type": "batch_norm"},  # first: folds forward into the first dense layer
                {"type": "dense", "units": 8, "activation": "selu"},
                {"type": "batch_norm"},  # two in a row after selu: composed, folded forward
                {"type": "batch_norm"},
                {"type": "dense", "units": 4},
                {"type": "batch_norm"},  # after a linear layer: folds back into it
                {"type": "dense", "units": 1},
            ],
            "loss": "mse",
            "epochs": 2,
        }
    )
    artifact, data = trained(spec)
    assert not artifact.meta["scaler"]
    proto = to_onnx(artifact)
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert len(proto.graph.output[0].type.tensor_type.shape.dim) == 1  # as the route: flat
    assert_onnx_matches_runtime(artifact, data.X_test)


def test_string_labels_map_through_the_stored_classes() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    y = np.where(X[:, 0] + 0.3 * rng.normal(size=60) > 0, "spam", "ham")
    spec = parse_spec(
        {
            "dataset": {"inline": {"X": X.tolist(), "y": y.tolist()}},
            "layers": [
                {"type": "dense", "units": 4, "activation": "swish"},
                {"type": "dense", "units": 1, "activation": "sigmoid"},
            ],
            "loss": "binary_crossentropy",
            "epochs": 3,
        }
    )
    artifact, _ = trained(spec)
    assert artifact.meta["classes"] == ["ham", "spam"]
    assert_onnx_matches_runtime(artifact, X * 4)
