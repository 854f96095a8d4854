"""A stored model as an ONNX graph, built with the `onnx` package's helper API.

The graph takes `input` (float32, `[batch, n_features]`) and gives what the predict route gives:
for classification `probabilities` (float32, `[batch, n_classes]`, in the order of the model's
classes) and `label_index` (int64, `[batch]`: the argmax, an index into the `classes` stored in
the model's metadata properties); for regression `predictions` (float32, `[batch]` for one
target, `[batch, n_targets]` for more).

What the graph holds: the stored standardization as `Sub`/`Div` at the input (kept there rather
than folded into the first kernel: folding subtracts large products in float32 when features
are far from zero, which costs more precision than the two element-wise ops); each dense layer
as one `Gemm`, with batch normalization folded into it and dropout removed exactly as the NumPy
runtime does (core.folding); each activation of core.activations as ONNX operators of opset
`OPSET`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from core.activations import SELU_ALPHA, SELU_SCALE, ActivationSpec
from core.artifact import Artifact
from core.folding import AffineStep, DenseStep, folded_steps

if TYPE_CHECKING:
    import onnx

OPSET = 17
# IR version 8 goes with opset 17; runtimes older than the `onnx` package still load it.
IR_VERSION = 8
PRODUCER = "trainsvc"


class _Graph:
    """Nodes and initializers being collected, with fresh names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value: NDArray) -> str:
        name = self.name(stem)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(
        self, kind: str, inputs: list[str], stem: str | None = None, *, out: str = "", **attrs: Any
    ) -> str:
        """Add a node; its output's name (`out`, or a fresh one from `stem`)."""
        out = out or self.name(stem or kind.lower())
        self.nodes.append(self.helper.make_node(kind, inputs, [out], name=self.name(kind), **attrs))
        return out


def _f32(value: float) -> NDArray:
    return np.asarray(value, dtype=np.float32)


def _activation(g: _Graph, spec: ActivationSpec, x: str) -> str:
    """The activation `spec` names, applied to tensor `x`, as ONNX operators."""
    return ACTIVATIONS[spec.type](g, x, spec.params())


def _gelu(g: _Graph, x: str, params: dict[str, Any]) -> str:
    # x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)): Gelu itself arrives only in opset 20.
    scaled = g.op("Mul", [x, g.const("inv_sqrt2", _f32(1.0 / math.sqrt(2.0)))])
    cdf = g.op("Add", [g.op("Erf", [scaled]), g.const("one", _f32(1.0))])
    return g.op("Mul", [g.op("Mul", [x, g.const("half", _f32(0.5))]), cdf], "gelu")


ACTIVATIONS: dict[str, Callable[[_Graph, str, dict[str, Any]], str]] = {
    "relu": lambda g, x, p: g.op("Relu", [x]),
    "sigmoid": lambda g, x, p: g.op("Sigmoid", [x]),
    "tanh": lambda g, x, p: g.op("Tanh", [x]),
    "softmax": lambda g, x, p: g.op("Softmax", [x], axis=-1),
    "linear": lambda g, x, p: x,
    "leaky_relu": lambda g, x, p: g.op("LeakyRelu", [x], alpha=float(p["negative_slope"])),
    "elu": lambda g, x, p: g.op("Elu", [x], alpha=1.0),
    "selu": lambda g, x, p: g.op("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_SCALE),
    "gelu": _gelu,
    "softplus": lambda g, x, p: g.op("Softplus", [x]),
    "swish": lambda g, x, p: g.op("Mul", [x, g.op("Sigmoid", [x])], "swish"),
}


def to_onnx(artifact: Artifact, *, name: str = "model") -> onnx.ModelProto:
    """The artifact's network as an ONNX model (opset `OPSET`), checked by `onnx.checker`."""
    import onnx
    from onnx import TensorProto, helper

    meta = artifact.meta
    n_features = int(meta["n_features"])
    task = meta["task"]
    classes = list(meta.get("classes") or [])
    g = _Graph()
    x = "input"
    if meta.get("scaler"):
        mean = artifact.arrays["scaler.mean"].astype(np.float32)
        scale = artifact.arrays["scaler.scale"].astype(np.float32)
        x = g.op("Sub", [x, g.const("scaler_mean", mean)], "centred")
        x = g.op("Div", [x, g.const("scaler_scale", scale)], "scaled")
    width = n_features
    for step in folded_steps(artifact):
        if isinstance(step, AffineStep):
            x = g.op("Mul", [x, g.const("bn_scale", step.scale.astype(np.float32))])
            x = g.op("Add", [x, g.const("bn_shift", step.shift.astype(np.float32))])
            continue
        if not isinstance(step, DenseStep):
            raise ValueError(f"layer type {step.layer.type!r} has no ONNX form")
        kernel = step.kernel.astype(np.float32)
        bias = step.bias.astype(np.float32)
        x = g.op("Gemm", [x, g.const("kernel", kernel), g.const("bias", bias)], "dense")
        x = _activation(g, step.activation, x)
        width = kernel.shape[1]
    batch = "batch"
    outputs = []
    if task == "classification":
        if width == 1:  # one sigmoid unit: [1 - p, p], as the predict route answers
            complement = g.op("Sub", [g.const("one", _f32(1.0)), x])
            x = g.op("Concat", [complement, x], axis=1)
        probs = g.op("Identity", [x], out="probabilities")
        g.op("ArgMax", [probs], out="label_index", axis=1, keepdims=0)
        outputs = [
            helper.make_tensor_value_info(
                "probabilities", TensorProto.FLOAT, [batch, len(classes)]
            ),
            helper.make_tensor_value_info("label_index", TensorProto.INT64, [batch]),
        ]
    else:
        n_targets = int(meta.get("n_targets", 1))
        if n_targets == 1:
            x = g.op("Reshape", [x, g.const("flat", np.asarray([-1], dtype=np.int64))])
        g.op("Identity", [x], out="predictions")
        shape: list[Any] = [batch] if n_targets == 1 else [batch, n_targets]
        outputs = [helper.make_tensor_value_info("predictions", TensorProto.FLOAT, shape)]
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, n_features])],
        outputs,
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        ir_version=IR_VERSION,
    )
    described = {
        "task": task,
        "engine": str(meta.get("engine", "")),
        "loss": str(meta.get("loss", "")),
        "n_features": str(n_features),
        "classes": json.dumps(classes),
        "outputs": json.dumps([o.name for o in outputs]),
    }
    helper.set_model_props(model, described)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(artifact: Artifact, *, name: str = "model") -> bytes:
    """The serialized ONNX model."""
    return to_onnx(artifact, name=name).SerializeToString()
