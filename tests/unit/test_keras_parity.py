"""The Keras engine against the NumPy engine and the runtime: same weights, same numbers."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from core.activations import ACTIVATIONS
from core.artifact import describe_layers
from core.datasets import prepare
from core.optimizers import SGD, Adam, RMSprop
from core.runtime import Predictor
from core.spec import parse_spec
from tests.support import SEED_SPEC, raw_features
from worker.engines.base import EngineResult
from worker.engines.numpy_engine.network import Network
from worker.engines.numpy_engine.optimizers import make_optimizer as make_numpy_optimizer
from worker.engines.numpy_engine.training import train as numpy_train
from worker.jobs import build_artifact

keras_engine = pytest.importorskip("worker.engines.keras_engine")
keras = keras_engine._keras()

OUTPUTS = {
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


def spec_for(loss: str, dropout: float = 0.0) -> Any:
    activation, width, dataset, params = OUTPUTS[loss]
    return parse_spec(
        {
            "dataset": {"builtin": dataset, "params": {"n_samples": 200, **params}},
            "preprocessing": {"standardize": True},
            "layers": [
                {
                    "type": "dense",
                    "units": 8,
                    "activation": "relu",
                    "kernel_initializer": "he_normal",
                },
                {"type": "batch_norm", "momentum": 0.9},
                {"type": "dropout", "rate": dropout},
                {"type": "dense", "units": 6, "activation": "tanh"},
                {"type": "dense", "units": 5, "activation": "sigmoid"},
                {"type": "dense", "units": width, "activation": activation},
            ],
            "loss": loss,
            "optimizer": "adam",
            "seed": 3,
        }
    )


def twin_models(loss: str, dropout: float = 0.0) -> tuple[Any, Network, Any]:
    """A Keras model and a NumPy network holding the same (Keras-initialized) weights."""
    spec = spec_for(loss, dropout)
    data = prepare(spec)
    model = keras_engine.build_model(spec, data.n_features)
    # Move batch-norm statistics off their initial values so inference mode is exercised.
    model.layers[1].moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype(np.float32))
    model.layers[1].moving_variance.assign(np.linspace(0.5, 2.0, 8).astype(np.float32))
    net = Network.from_spec(spec.layers, data.n_features, spec.loss, np.random.default_rng(0))
    net.load_arrays(keras_engine.export_arrays(model, spec.layers, data.n_features))
    return model, net, data


@pytest.mark.parametrize("loss", sorted(OUTPUTS))
def test_same_weights_same_outputs_and_loss(loss: str) -> None:
    model, net, data = twin_models(loss)
    x, t = data.X_fit[:32], data.T_fit[:32]
    keras_out = np.asarray(model(x, training=False))
    np.testing.assert_allclose(net.forward(x, training=False), keras_out, rtol=1e-5, atol=1e-6)
    numpy_out = net.forward(x, training=False)
    assert net.output.z is not None
    numpy_loss = net.loss.value(t, net.output.z, numpy_out)
    keras_loss_fn = keras.losses.get(keras_engine.LOSSES.get(loss))
    keras_loss = float(np.mean(np.asarray(keras_loss_fn(t, keras_out))))
    assert numpy_loss == pytest.approx(keras_loss, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "mse"])
def test_training_mode_batch_norm_and_moving_statistics_agree(loss: str) -> None:
    model, net, data = twin_models(loss)
    x = data.X_fit[:32]
    keras_out = np.asarray(model(x, training=True))
    np.testing.assert_allclose(net.forward(x, training=True), keras_out, rtol=1e-4, atol=1e-5)
    bn = net.layers[1]
    np.testing.assert_allclose(
        bn.state["moving_mean"], np.asarray(model.layers[1].moving_mean), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        bn.state["moving_variance"],
        np.asarray(model.layers[1].moving_variance),
        rtol=1e-5,
        atol=1e-6,
    )


def test_dropout_is_inverted_on_both_engines() -> None:
    model, net, _ = twin_models("mse", dropout=0.5)
    x = np.ones((64, 8), dtype=np.float32)
    keras_drop = np.asarray(model.layers[2](x, training=True))
    numpy_drop = net.layers[2].forward(x, training=True)
    for out in (keras_drop, numpy_drop):
        assert set(np.unique(out)) == {0.0, 2.0}
    np.testing.assert_array_equal(np.asarray(model.layers[2](x, training=False)), x)
    np.testing.assert_array_equal(net.layers[2].forward(x, training=False), x)


@pytest.mark.parametrize(
    "spec",
    [
        SGD(type="sgd", learning_rate=0.1),
        SGD(type="sgd", learning_rate=0.1, momentum=0.9),
        SGD(type="sgd", learning_rate=0.1, momentum=0.9, nesterov=True),
        RMSprop(type="rmsprop", learning_rate=0.01, rho=0.8, epsilon=1e-4),
        Adam(type="adam", learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-4),
    ],
    ids=["sgd", "momentum", "nesterov", "rmsprop", "adam"],
)
def test_optimizer_steps_agree(spec: Any) -> None:
    rng = np.random.default_rng(0)
    start = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    variable = keras.Variable(start.copy())
    keras_opt = keras_engine.make_optimizer(spec)
    numpy_param, numpy_grad = start.copy(), np.zeros_like(start)
    numpy_opt = make_numpy_optimizer(spec, numpy_param, numpy_grad)
    for g in grads:
        keras_opt.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        numpy_grad[...] = g
        numpy_opt.step()
        np.testing.assert_allclose(numpy_param, np.asarray(variable), rtol=1e-5, atol=1e-7)


def test_runtime_matches_keras_predict_on_the_seed_job() -> None:
    raw = copy.deepcopy(SEED_SPEC)
    raw["engine"] = "keras"
    spec = parse_spec(raw)
    data = prepare(spec)
    model, history, _ = keras_engine.fit_model(spec, data, lambda r: None)
    try:
        assert len(history) == 50
        expected = model.predict(data.X_test, verbose=0)
        arrays = keras_engine.export_arrays(model, spec.layers, data.n_features)
    finally:
        keras.backend.clear_session()
    result = EngineResult(
        layers=describe_layers(spec.layers),
        arrays=arrays,
        history=history,
        test_loss=0.0,
        test_accuracy=None,
    )
    predictor = Predictor.from_bytes(build_artifact(spec, data, result).to_bytes())
    assert data.scaler_mean is not None and data.scaler_scale is not None
    raw_rows = raw_features(data, data.X_test)
    np.testing.assert_allclose(predictor.outputs(raw_rows), expected, atol=1e-5)


# Every activation the registry declares (softmax as the output, the rest in hidden layers), and
# one with a parameter away from its default: no test is written per activation.
ACTIVATION_CASES = [
    *({"type": name} for name in ACTIVATIONS if name != "softmax"),
    {"type": "leaky_relu", "negative_slope": 0.05},
]


def activation_spec(activation: dict[str, Any], engine: str = "numpy", epochs: int = 1) -> Any:
    return parse_spec(
        {
            "engine": engine,
            "dataset": {
                "builtin": "make_classification",
                "params": {"n_samples": 200, "n_features": 6, "n_classes": 3, "n_informative": 4},
            },
            "preprocessing": {"standardize": True},
            "layers": [
                {"type": "dense", "units": 8, "activation": activation},
                {"type": "batch_norm"},
                {"type": "dense", "units": 5, "activation": activation},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ],
            "loss": "sparse_categorical_crossentropy",
            "optimizer": {"type": "adam", "learning_rate": 0.01},
            "epochs": epochs,
            "seed": 4,
        }
    )


def case_id(activation: dict[str, Any]) -> str:
    return "-".join(str(v) for v in activation.values())


@pytest.mark.parametrize("activation", ACTIVATION_CASES, ids=case_id)
def test_each_activation_same_weights_same_outputs(activation: dict[str, Any]) -> None:
    """Keras, the NumPy engine and the inference runtime agree within 1e-5 on shared weights."""
    spec = activation_spec(activation)
    data = prepare(spec)
    model = keras_engine.build_model(spec, data.n_features)
    x = data.X_fit[:64] * 3  # spread the inputs over each activation's whole shape
    try:
        keras_out = np.asarray(model(x, training=False))
        arrays = keras_engine.export_arrays(model, spec.layers, data.n_features)
        # Keras gets the twin's weights back unchanged (export and import are inverses).
        keras_engine.import_arrays(model, spec.layers, data.n_features, arrays)
        np.testing.assert_array_equal(np.asarray(model(x, training=False)), keras_out)
    finally:
        keras.backend.clear_session()
    net = Network.from_spec(spec.layers, data.n_features, spec.loss, np.random.default_rng(0))
    net.load_arrays(arrays)
    np.testing.assert_allclose(net.forward(x, training=False), keras_out, rtol=1e-5, atol=1e-5)
    result = EngineResult(describe_layers(spec.layers), arrays, [], 0.0, None)
    predictor = Predictor.from_bytes(build_artifact(spec, data, result).to_bytes())
    raw_rows = raw_features(data, x)
    np.testing.assert_allclose(predictor.outputs(raw_rows), keras_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATION_CASES, ids=case_id)
def test_each_activation_trains_on_both_engines_and_serves(activation: dict[str, Any]) -> None:
    for engine, train in (("numpy", numpy_train), ("keras", keras_engine.train)):
        spec = activation_spec(activation, engine, epochs=3)
        data = prepare(spec)
        result = train(spec, data, lambda r: None)
        assert all(np.isfinite(r.loss) for r in result.history), engine
        assert result.history[-1].loss < result.history[0].loss, engine
        predictor = Predictor.from_bytes(build_artifact(spec, data, result).to_bytes())
        answer = predictor.predict(raw_features(data, data.X_test))
        assert len(answer["predictions"]) == len(data.X_test), engine
        assert np.allclose(np.sum(answer["probabilities"], axis=1), 1.0), engine
