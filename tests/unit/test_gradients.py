"""Finite-difference gradient checks (float64) for every activation, layer and loss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from core.activations import ACTIVATIONS, ActivationSpec, Bound, LeakyReluSpec, bind
from core.layers import BatchNorm as BatchNormSpec
from core.layers import Dense as DenseSpec
from core.layers import Dropout as DropoutSpec
from core.losses import LOSSES
from worker.engines.numpy_engine.layers import BatchNorm, Dense, Dropout, Layer
from worker.engines.numpy_engine.network import Network

EPS = 1e-6


def numeric_grad(f: Callable[[], float], x: np.ndarray) -> np.ndarray:
    """Central differences of f with respect to every entry of x (modified in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + EPS
        up = f()
        x[i] = old - EPS
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * EPS)
    return grad


def assert_close(analytic: np.ndarray, numeric: np.ndarray) -> None:
    scale = np.maximum(1.0, np.abs(analytic) + np.abs(numeric))
    assert np.max(np.abs(analytic - numeric) / scale) < 1e-6


# Every activation in the registry with its default parameters, and one with others.
ACTIVATION_SPECS: list[ActivationSpec] = [
    *(entry.spec(type=name) for name, entry in ACTIVATIONS.items()),
    LeakyReluSpec(type="leaky_relu", negative_slope=0.05),
]
ACTIVATION_IDS = ["-".join(str(v) for v in spec.model_dump().values()) for spec in ACTIVATION_SPECS]


def check_layer(layer: Layer, x: np.ndarray, rng: np.random.Generator, reseed: int | None = None):
    """Check d(sum(R * layer(x)))/d(input) and /d(every param) against central differences."""
    out = layer.forward(x, training=True)
    weights = rng.standard_normal(out.shape)

    def f() -> float:
        if reseed is not None:
            layer.rng = np.random.default_rng(reseed)  # type: ignore[attr-defined]
        return float(np.sum(weights * layer.forward(x, training=True)))

    f()
    grad_x = layer.backward(weights)
    assert grad_x is not None
    analytic = {name: layer.grads[name].copy() for name in layer.params}
    assert_close(grad_x, numeric_grad(f, x))
    for name, param in layer.params.items():
        assert_close(analytic[name], numeric_grad(f, param))


@pytest.mark.parametrize("activation", ACTIVATION_SPECS, ids=ACTIVATION_IDS)
def test_dense_layer_with_each_activation(activation: ActivationSpec) -> None:
    rng = np.random.default_rng(1)
    layer = Dense(4, 3, bind(activation), "glorot_uniform", rng, dtype=np.float64)
    layer.params["bias"][:] = rng.standard_normal(3)
    x = rng.standard_normal((5, 4))
    x += np.sign(x) * 0.1  # keep pre-activations away from a kink at zero
    check_layer(layer, x, rng)


@pytest.mark.parametrize("activation", ACTIVATION_SPECS, ids=ACTIVATION_IDS)
def test_each_activation_backward_matches_its_forward(activation: ActivationSpec) -> None:
    act = bind(activation)
    rng = np.random.default_rng(2)
    z = rng.standard_normal((4, 3)) + 0.05
    g = rng.standard_normal((4, 3))
    analytic = act.backward(g, z, act.forward(z))
    assert_close(analytic, numeric_grad(lambda: float(np.sum(g * act.forward(z))), z))


def test_batch_norm_in_training_mode() -> None:
    rng = np.random.default_rng(3)
    layer = BatchNorm(4, momentum=0.99, epsilon=1e-3, dtype=np.float64)
    layer.params["gamma"][:] = rng.uniform(0.5, 1.5, 4)
    layer.params["beta"][:] = rng.standard_normal(4)
    check_layer(layer, rng.standard_normal((6, 4)) * 2 + 1, rng)


def test_dropout_with_a_fixed_mask() -> None:
    rng = np.random.default_rng(4)
    layer = Dropout(0.4, np.random.default_rng(7))
    check_layer(layer, rng.standard_normal((6, 5)), rng, reseed=7)


def test_dropout_scales_kept_units_and_is_identity_at_inference() -> None:
    layer = Dropout(0.5, np.random.default_rng(0))
    x = np.ones((1000, 10), dtype=np.float32)
    out = layer.forward(x, training=True)
    assert set(np.unique(out)) == {0.0, 2.0}
    assert abs(out.mean() - 1.0) < 0.05
    assert np.array_equal(layer.forward(x, training=False), x)


def act_named(name: str) -> Bound:
    return bind(ACTIVATIONS.get(name).spec(type=name))


OUTPUTS = {
    "mse": ("linear", 2),
    "binary_crossentropy": ("sigmoid", 1),
    "categorical_crossentropy": ("softmax", 3),
    "sparse_categorical_crossentropy": ("softmax", 3),
}


def targets(loss: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if loss == "mse":
        return rng.standard_normal((n, 2))
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, (n, 1)).astype(np.float64)
    labels = rng.integers(0, 3, n)
    return labels if loss.startswith("sparse") else np.eye(3)[labels]


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_each_loss_gradient_with_respect_to_logits(loss_name: str) -> None:
    rng = np.random.default_rng(5)
    activation, width = OUTPUTS[loss_name]
    act, loss = bind(ACTIVATIONS.get(activation).spec(type=activation)), LOSSES.get(loss_name)
    z = rng.standard_normal((7, width)) * 2
    t = targets(loss_name, rng, 7)
    analytic = loss.gradient(t, z, act.forward(z), act)
    assert_close(analytic, numeric_grad(lambda: loss.value(t, z, act.forward(z)), z))


@pytest.mark.parametrize("loss_name", ["mse"])
def test_mse_through_a_nonlinear_output(loss_name: str) -> None:
    rng = np.random.default_rng(6)
    act, loss = act_named("tanh"), LOSSES.get(loss_name)
    z = rng.standard_normal((5, 2))
    t = rng.standard_normal((5, 2))
    analytic = loss.gradient(t, z, act.forward(z), act)
    assert_close(analytic, numeric_grad(lambda: loss.value(t, z, act.forward(z)), z))


def test_cross_entropy_stays_finite_for_extreme_logits() -> None:
    z = np.array([[1000.0, -1000.0, 0.0]])
    for name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        loss = LOSSES.get(name)
        t = np.array([1]) if name.startswith("sparse") else np.array([[0.0, 1.0, 0.0]])
        value = loss.value(t, z, act_named("softmax").forward(z))
        assert np.isfinite(value) and value == pytest.approx(2000.0)
    bce = LOSSES.get("binary_crossentropy")
    zb = np.array([[800.0], [-800.0]])
    assert bce.value(np.array([[0.0], [1.0]]), zb, act_named("sigmoid").forward(zb)) == (
        pytest.approx(800.0)
    )


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_whole_network_gradients(loss_name: str) -> None:
    """Every parameter of a dense / batch-norm / dropout stack, end to end through the loss."""
    activation, width = OUTPUTS[loss_name]
    specs = [
        DenseSpec.model_validate({"type": "dense", "units": 5, "activation": "tanh"}),
        BatchNormSpec(type="batch_norm"),
        DropoutSpec(type="dropout", rate=0.3),
        DenseSpec.model_validate(
            {
                "type": "dense",
                "units": 4,
                "activation": "sigmoid",
                "kernel_initializer": "he_normal",
            }
        ),
        DenseSpec.model_validate({"type": "dense", "units": width, "activation": activation}),
    ]
    rng = np.random.default_rng(8)
    net = Network.from_spec(specs, 3, loss_name, rng, dtype=np.float64)
    x = rng.standard_normal((6, 3))
    t = targets(loss_name, rng, 6)
    dropout = net.layers[2]

    def f() -> float:
        dropout.rng = np.random.default_rng(11)  # type: ignore[attr-defined]
        a = net.forward(x, training=True)
        assert net.output.z is not None
        return net.loss.value(t, net.output.z, a)

    f()
    dropout.rng = np.random.default_rng(11)  # type: ignore[attr-defined]
    net.train_step(x, t)
    assert_close(net.flat_grads.copy(), numeric_grad(f, net.flat_params))
