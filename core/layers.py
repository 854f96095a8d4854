"""Layer types: each one registry entry, a spec model that also knows its weights and inference.

A layer type declares, in one class: its spec fields (with Keras's defaults), the arrays it owns
for an input width (names and shapes, in the order Keras's `get_weights()` returns them, and
which of them are trained), its output width, what the model artifact stores of it, and how the
inference runtime applies it. The parameter count, the artifact's shape check and the runtime
are derived from that; the engines key their training builders by the same `type` names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, TypeAdapter, ValidationError

from core.activations import ActivationField, bind
from core.initializers import InitializerName
from core.registry import Registry
from core.schema import Strict

MAX_UNITS = 4096

Op = Callable[[NDArray], NDArray]
Shapes = dict[str, tuple[int, ...]]


class LayerSpec(Strict):
    type: str
    # The name Keras gives such a layer in a model summary ("dense", "dense_1", …).
    summary_name: ClassVar[str]
    # The spec fields the artifact keeps: what inference needs besides the arrays.
    stored: ClassVar[tuple[str, ...]] = ()
    # Of the arrays `weights` names, the ones training updates (the rest are statistics).
    trained: ClassVar[frozenset[str]] = frozenset()

    def weights(self, width: int) -> Shapes:
        """Name and shape of each array this layer owns, given its input width."""
        return {}

    def out_width(self, width: int) -> int:
        return width

    def inference(self, arrays: dict[str, NDArray]) -> Op | None:
        """The layer at inference time, from its own arrays (None: the identity)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the artifact stores of this layer."""
        return self.model_dump(mode="json", include={"type", *self.stored})


class Dense(LayerSpec):
    type: Literal["dense"]
    units: int = Field(ge=1, le=MAX_UNITS)
    activation: ActivationField = Field("linear", validate_default=True)
    kernel_initializer: InitializerName = "glorot_uniform"
    summary_name: ClassVar[str] = "dense"
    stored: ClassVar[tuple[str, ...]] = ("units", "activation")
    trained: ClassVar[frozenset[str]] = frozenset({"kernel", "bias"})

    def weights(self, width: int) -> Shapes:
        return {"kernel": (width, self.units), "bias": (self.units,)}

    def out_width(self, width: int) -> int:
        return self.units

    def inference(self, arrays: dict[str, NDArray]) -> Op:
        act = bind(self.activation).forward
        kernel = arrays["kernel"].astype(np.float32)
        bias = arrays["bias"].astype(np.float32)
        return lambda x: act(x @ kernel + bias)


class BatchNorm(LayerSpec):
    type: Literal["batch_norm"]
    momentum: float = Field(0.99, ge=0, lt=1)
    epsilon: float = Field(1e-3, gt=0, le=1)
    summary_name: ClassVar[str] = "batch_normalization"
    stored: ClassVar[tuple[str, ...]] = ("epsilon",)
    trained: ClassVar[frozenset[str]] = frozenset({"gamma", "beta"})

    def weights(self, width: int) -> Shapes:
        return {name: (width,) for name in ("gamma", "beta", "moving_mean", "moving_variance")}

    def inference(self, arrays: dict[str, NDArray]) -> Op:
        # Inference-time batch normalization is an affine map: fold it into one scale and shift.
        gamma, beta = arrays["gamma"], arrays["beta"]
        mean, var = arrays["moving_mean"], arrays["moving_variance"]
        scale = (gamma / np.sqrt(var + self.epsilon)).astype(np.float32)
        shift = (beta - mean * scale).astype(np.float32)
        return lambda x: x * scale + shift


class Dropout(LayerSpec):
    type: Literal["dropout"]
    rate: float = Field(ge=0, lt=1)
    summary_name: ClassVar[str] = "dropout"
    stored: ClassVar[tuple[str, ...]] = ("rate",)


def _tag(model: type[LayerSpec]) -> str:
    name: str = model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    return name


LAYERS: Registry[type[LayerSpec]] = Registry("layer type", (Dense, BatchNorm, Dropout), name=_tag)

if TYPE_CHECKING:
    LayerField = LayerSpec
else:
    LayerField = Annotated[
        Union[tuple(LAYERS.get(name) for name in LAYERS)],  # noqa: UP007
        Field(discriminator="type"),
    ]

_STORED: TypeAdapter[LayerSpec] = TypeAdapter(LayerField)


def read_described(described: Any) -> LayerSpec:
    """A layer as the artifact describes it; raises ValueError if it is not one we know."""
    kind = described.get("type") if isinstance(described, dict) else None
    if kind not in LAYERS:
        raise ValueError(f"unknown type {kind!r}")
    try:
        return _STORED.validate_python(described)
    except ValidationError as exc:
        raise ValueError(exc.errors(include_url=False)[0]["msg"]) from None


def array_names(index: int, layer: LayerSpec, width: int) -> dict[str, str]:
    """Each of the layer's array names mapped to its artifact name `layers.<index>.<name>`."""
    return {name: f"layers.{index}.{name}" for name in layer.weights(width)}
