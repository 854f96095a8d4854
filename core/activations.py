"""Activations: each one registry entry with its forward and backward side by side.

An entry holds its vectorized forward `f(z, **params)`, its backward `f'(g, z, a, **params)` (the
gradient with respect to the pre-activation z, given the gradient g with respect to the output a),
and its spec model (the parameters a job may set, with Keras's defaults). The NumPy engine trains
with these functions and the inference runtime serves with them; the Keras engine keys its own
builders by the same names. In a job spec an activation is a name (`"relu"`) or, to set its
parameters, an object (`{"type": "leaky_relu", "negative_slope": 0.1}`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import numpy as np
from numpy.typing import NDArray
from pydantic import BeforeValidator, Discriminator, Field, PlainSerializer, Tag, create_model
from scipy.special import erf

from core.registry import Registry
from core.schema import Strict

Array = NDArray[np.floating]


class ActivationSpec(Strict):
    """An activation and its parameters (most have none)."""

    type: str

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type"})


class LeakyReluSpec(ActivationSpec):
    type: Literal["leaky_relu"]
    negative_slope: float = Field(0.2, ge=0, le=1)


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable[..., Array]
    backward: Callable[..., Array]
    spec: type[ActivationSpec]


@dataclass(frozen=True)
class Bound:
    """An activation with its parameters applied: what a layer calls."""

    name: str
    forward: Callable[[Array], Array]
    backward: Callable[[Array, Array, Array], Array]


def _relu(z: Array) -> Array:
    return np.maximum(z, 0)


def _relu_backward(g: Array, z: Array, a: Array) -> Array:
    return g * (z > 0)


def _sigmoid(z: Array) -> Array:
    # tanh form: no overflow for large |z|, unlike 1 / (1 + exp(-z)).
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _sigmoid_backward(g: Array, z: Array, a: Array) -> Array:
    return g * a * (1.0 - a)


def _tanh(z: Array) -> Array:
    return np.tanh(z)


def _tanh_backward(g: Array, z: Array, a: Array) -> Array:
    return g * (1.0 - a * a)


def softmax(z: Array) -> Array:
    """Row-wise softmax, max-shifted so exp never overflows."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def _softmax_backward(g: Array, z: Array, a: Array) -> Array:
    return a * (g - (g * a).sum(axis=1, keepdims=True))


def _linear(z: Array) -> Array:
    return z


def _linear_backward(g: Array, z: Array, a: Array) -> Array:
    return g


def _leaky_relu(z: Array, negative_slope: float) -> Array:
    return np.where(z > 0, z, z * z.dtype.type(negative_slope))


def _leaky_relu_backward(g: Array, z: Array, a: Array, negative_slope: float) -> Array:
    return g * np.where(z > 0, 1.0, negative_slope).astype(g.dtype)


def _elu(z: Array) -> Array:
    # expm1 of min(z, 0): exact near zero and no overflow warning for the unused positive side.
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _elu_backward(g: Array, z: Array, a: Array) -> Array:
    return g * np.where(z > 0, 1.0, a + 1.0)


# The constants of Klambauer et al. (2017), as Keras uses them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _selu(z: Array) -> Array:
    return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0)))


def _selu_backward(g: Array, z: Array, a: Array) -> Array:
    return g * np.where(z > 0, SELU_SCALE, a + SELU_SCALE * SELU_ALPHA)


def _gelu(z: Array) -> Array:
    # The exact form, x * Phi(x), as Keras's default (approximate=False).
    return 0.5 * z * (1.0 + erf(z * (1.0 / math.sqrt(2.0))))


def _gelu_backward(g: Array, z: Array, a: Array) -> Array:
    cdf = 0.5 * (1.0 + erf(z * (1.0 / math.sqrt(2.0))))
    pdf = np.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
    return g * (cdf + z * pdf)


def _softplus(z: Array) -> Array:
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): finite for any z.
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def _softplus_backward(g: Array, z: Array, a: Array) -> Array:
    return g * _sigmoid(z)


def _swish(z: Array) -> Array:
    return z * _sigmoid(z)


def _swish_backward(g: Array, z: Array, a: Array) -> Array:
    s = _sigmoid(z)
    return g * (s + z * s * (1.0 - s))


def _entry(
    name: str,
    forward: Callable[..., Array],
    backward: Callable[..., Array],
    spec: type[ActivationSpec] | None = None,
) -> Activation:
    if spec is None:  # no parameters: the spec model is only its name
        title = "".join(part.title() for part in name.split("_"))
        fields: dict[str, Any] = {"type": (Literal[name], ...)}
        spec = create_model(f"{title}Spec", __base__=ActivationSpec, **fields)
    return Activation(name, forward, backward, spec)


ACTIVATIONS: Registry[Activation] = Registry(
    "activation",
    (
        _entry("relu", _relu, _relu_backward),
        _entry("sigmoid", _sigmoid, _sigmoid_backward),
        _entry("tanh", _tanh, _tanh_backward),
        _entry("softmax", softmax, _softmax_backward),
        _entry("linear", _linear, _linear_backward),
        _entry("leaky_relu", _leaky_relu, _leaky_relu_backward, LeakyReluSpec),
        _entry("elu", _elu, _elu_backward),
        _entry("selu", _selu, _selu_backward),
        _entry("gelu", _gelu, _gelu_backward),
        _entry("softplus", _softplus, _softplus_backward),
        _entry("swish", _swish, _swish_backward),
    ),
    name=lambda a: a.name,
)


def bind(spec: ActivationSpec) -> Bound:
    """The activation `spec` names, with its parameters applied."""
    entry = ACTIVATIONS.get(spec.type)
    params = spec.params()
    if not params:
        return Bound(entry.name, entry.forward, entry.backward)
    return Bound(entry.name, partial(entry.forward, **params), partial(entry.backward, **params))


def _shorthand(value: Any) -> Any:
    """A bare name stands for the activation with its default parameters."""
    return {"type": value} if isinstance(value, str) else value


def _tag(value: Any) -> str | None:
    name = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return name if isinstance(name, str) and name in ACTIVATIONS else None


def _stored(spec: ActivationSpec) -> str | dict[str, Any]:
    """As the spec and the artifact store it: the bare name unless it has parameters."""
    params = spec.params()
    return {"type": spec.type, **params} if params else spec.type


if TYPE_CHECKING:
    ActivationField = ActivationSpec
else:
    _SPECS = tuple(Annotated[a.spec, Tag(name)] for name, a in ACTIVATIONS.items())
    _NAMES = Literal[ACTIVATIONS.names]
    ActivationField = Annotated[
        Annotated[
            Union[_SPECS],  # noqa: UP007 - a union built from the registry
            Discriminator(
                _tag,
                custom_error_type="unknown_activation",
                custom_error_message="Input should be "
                + ", ".join(ACTIVATIONS.names)
                + " (a name, or {'type': NAME, ...its parameters})",
            ),
        ],
        BeforeValidator(_shorthand, json_schema_input_type=Union[_NAMES, Union[_SPECS]]),  # noqa: UP007
        PlainSerializer(_stored, return_type=Union[str, dict[str, Any]]),  # noqa: UP007
    ]
