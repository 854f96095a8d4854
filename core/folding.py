"""A network as inference runs it: dropout removed, batch normalization folded into a dense layer.

At inference a batch norm is an affine map `x * scale + shift`; next to a dense layer it costs
nothing: folded back into the preceding dense layer when that one is linear
(`(x W + b) s + t = x (W s) + (b s + t)`), otherwise forward into the next dense layer
(`(x s + t) W + b = x (s[:, None] W) + (t W + b)`), and kept as its own step only when there is
neither. The arithmetic is done in float64 and rounded to float32 once. The NumPy runtime
(core.runtime) and the ONNX export (core.onnx_export) both run these steps, so they compute the
same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from core.activations import ActivationSpec
from core.artifact import Artifact
from core.layers import BatchNorm, Dense, Dropout, LayerSpec, Op


@dataclass
class DenseStep:
    kernel: NDArray  # float64
    bias: NDArray
    activation: ActivationSpec


@dataclass
class AffineStep:
    scale: NDArray  # float64
    shift: NDArray


@dataclass
class OtherStep:
    """A layer with no folded form: its own inference op."""

    layer: LayerSpec
    op: Op


Step = DenseStep | AffineStep | OtherStep


def batch_norm_affine(layer: BatchNorm, arrays: dict[str, NDArray]) -> tuple[NDArray, NDArray]:
    """Inference-time batch normalization as (scale, shift), in float64."""
    gamma, beta = arrays["gamma"].astype(np.float64), arrays["beta"].astype(np.float64)
    mean = arrays["moving_mean"].astype(np.float64)
    var = arrays["moving_variance"].astype(np.float64)
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale


def folded_steps(artifact: Artifact) -> list[Step]:
    """The artifact's layers as inference steps, batch norms folded and dropout removed."""
    steps: list[Step] = []
    pending: AffineStep | None = None  # batch norm(s) waiting for the next dense layer
    width = int(artifact.meta["n_features"])
    for i, layer in enumerate(artifact.layers()):
        arrays = artifact.layer_arrays(i, layer, width)
        width = layer.out_width(width)
        if isinstance(layer, Dropout):
            continue
        if isinstance(layer, BatchNorm):
            scale, shift = batch_norm_affine(layer, arrays)
            if pending is not None:  # two in a row: one affine map
                scale, shift = pending.scale * scale, pending.shift * scale + shift
                pending = None
            last = steps[-1] if steps else None
            if isinstance(last, DenseStep) and last.activation.type == "linear":
                last.kernel = last.kernel * scale
                last.bias = last.bias * scale + shift
            else:
                pending = AffineStep(scale, shift)
            continue
        if isinstance(layer, Dense):
            kernel = arrays["kernel"].astype(np.float64)
            bias = arrays["bias"].astype(np.float64)
            if pending is not None:
                kernel, bias = pending.scale[:, None] * kernel, pending.shift @ kernel + bias
                pending = None
            steps.append(DenseStep(kernel, bias, layer.activation))
            continue
        if pending is not None:
            steps.append(pending)
            pending = None
        op = layer.inference(arrays)
        if op is not None:
            steps.append(OtherStep(layer, op))
    if pending is not None:
        steps.append(pending)
    return steps
