"""The job spec (v1): parsed once into typed objects, with limits and cross-field checks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from core.activations import ACTIVATIONS
from core.dataset_spec import (
    DATASET_TAGS,
    DATASETS_CONTEXT,
    MAX_SAMPLES,
    DatasetSpec,
    DataShape,
    Inline,
    Uploaded,
    UploadedInfo,
    n_fit_rows,
    n_test_rows,
)
from core.layers import LAYERS, Dense, LayerField, LayerSpec
from core.losses import LOSSES, LossName
from core.optimizers import OPTIMIZERS, OptimizerField
from core.schema import Strict, Text
from core.warmstart import MODELS_CONTEXT, Init, ModelLookup, architecture_problems

DatasetLookup = Callable[[str], UploadedInfo | None]

MAX_LAYERS = 64
MAX_PARAMS = 5_000_000
MAX_EPOCHS = 10_000
# Epochs times training rows: bounds how much work one job may ask for.
MAX_EPOCH_SAMPLES = 500_000_000


class Split(Strict):
    test_size: float = Field(0.2, gt=0, lt=1)
    validation_split: float = Field(0.0, ge=0, lt=1)


class Preprocessing(Strict):
    standardize: bool = False


class EarlyStopping(Strict):
    """Keras's EarlyStopping; `restore_best_weights` also applies when no early stop happens."""

    monitor: Literal["loss", "accuracy", "val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(0, ge=0, le=MAX_EPOCHS)
    min_delta: float = Field(0.0, ge=0, le=1e6)
    restore_best_weights: bool = False

    @property
    def mode(self) -> Literal["min", "max"]:
        return "max" if self.monitor.endswith("accuracy") else "min"


@dataclass(frozen=True)
class LayerSummary:
    name: str
    type: str
    output_shape: tuple[None, int]
    params: int
    trainable_params: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "output_shape": list(self.output_shape),
            "params": self.params,
            "trainable_params": self.trainable_params,
        }


@dataclass(frozen=True)
class ParamCounts:
    total: int
    trainable: int
    non_trainable: int


def summarize_layers(layers: Sequence[LayerSpec], n_features: int) -> list[LayerSummary]:
    """Per-layer output shape and parameter count, counted and named as Keras does."""
    seen: dict[str, int] = {}
    summary = []
    width = n_features
    for layer in layers:
        base = layer.summary_name
        count = seen.get(base, 0)
        seen[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        sizes = {k: math.prod(shape) for k, shape in layer.weights(width).items()}
        width = layer.out_width(width)
        trainable = sum(size for k, size in sizes.items() if k in layer.trained)
        summary.append(
            LayerSummary(name, layer.type, (None, width), sum(sizes.values()), trainable)
        )
    return summary


class JobSpec(Strict):
    name: Text | None = Field(None, max_length=200)
    engine: Literal["numpy", "keras"] = "numpy"
    dataset: DatasetSpec
    split: Split = Split()
    preprocessing: Preprocessing = Preprocessing()
    layers: list[LayerField] = Field(min_length=1, max_length=MAX_LAYERS)
    loss: LossName
    optimizer: OptimizerField = Field("rmsprop", validate_default=True)
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    early_stopping: EarlyStopping | None = None
    max_seconds: float | None = Field(None, gt=0, le=7 * 24 * 3600)
    # Warm start: the weights of a finished model of the same architecture.
    init: Init | None = None

    @property
    def task(self) -> Literal["classification", "regression"]:
        return LOSSES.get(self.loss).task

    def data_shape(self) -> DataShape:
        if isinstance(self.dataset, Inline | Uploaded):
            return self.dataset.shape_for(self.task)
        return self.dataset.shape()

    def summary(self) -> list[LayerSummary]:
        return summarize_layers(self.layers, self.data_shape().n_features)

    def param_counts(self) -> ParamCounts:
        """The network's parameters: all, trained, and not trained (batch-norm statistics)."""
        summary = self.summary()
        total = sum(s.params for s in summary)
        trainable = sum(s.trainable_params for s in summary)
        return ParamCounts(total, trainable, total - trainable)

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        problems = list(_cross_field_problems(self))
        if problems:
            raise SpecProblems(problems)
        return self


class SpecProblems(ValueError):
    """Several cross-field problems, each with its own field path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in problems))
        self.problems = problems


def _cross_field_problems(spec: JobSpec) -> Any:
    try:
        shape = spec.data_shape()
    except ValueError as exc:
        yield ("dataset", str(exc))
        return
    last = len(spec.layers) - 1
    out = spec.layers[-1]
    if shape.task != spec.task:
        want = " or ".join(name for name, loss in LOSSES.items() if loss.task == shape.task)
        yield ("loss", f"{spec.loss} does not fit a {shape.task} dataset; use {want}")
    elif not isinstance(out, Dense):
        yield (f"layers[{last}]", "the last layer must be a dense layer")
    else:
        loss = LOSSES.get(spec.loss)
        for where, message in loss.output_problems(shape, out.units, out.activation.type):
            yield (where if where == "loss" else f"layers[{last}].{where}", message)
    stopping = spec.early_stopping
    if stopping is not None:
        if stopping.monitor.startswith("val_") and spec.split.validation_split == 0:
            yield (
                "early_stopping.monitor",
                f"{stopping.monitor} needs a validation set: set split.validation_split",
            )
        if stopping.monitor.endswith("accuracy") and spec.task == "regression":
            yield ("early_stopping.monitor", "regression jobs report no accuracy")
    for i, layer in enumerate(spec.layers[:-1]):
        if isinstance(layer, Dense) and layer.activation.type == "softmax":
            yield (f"layers[{i}].activation", "softmax is only allowed on the output layer")

    summary = summarize_layers(spec.layers, shape.n_features)
    if spec.init is not None:
        described = [s.as_dict() for s in summary]
        yield from architecture_problems(spec.init, shape.n_features, described)
    total = sum(s.params for s in summary)
    if total > MAX_PARAMS:
        yield ("layers", f"the network has {total:,} parameters; the limit is {MAX_PARAMS:,}")
    n_test = n_test_rows(shape.n_samples, spec.split.test_size)
    n_train = shape.n_samples - n_test
    n_fit = n_fit_rows(n_train, spec.split.validation_split)
    if n_test < 1 or n_train < 1:
        yield ("split.test_size", f"{shape.n_samples} rows cannot be split with this test_size")
    elif n_fit < 1 or (spec.split.validation_split > 0 and n_fit == n_train):
        yield (
            "split.validation_split",
            f"{n_train} training rows cannot be split with this validation_split",
        )
    if spec.epochs * n_fit > MAX_EPOCH_SAMPLES:
        yield (
            "epochs",
            f"epochs x training rows is {spec.epochs * n_fit:,}; the limit is "
            f"{MAX_EPOCH_SAMPLES:,}",
        )


class SpecError(ValueError):
    """A spec that failed validation; `details` has one entry per problem, with its field path."""

    def __init__(self, details: list[dict[str, str]]) -> None:
        super().__init__(f"the job spec has {len(details)} problem(s)")
        self.details = details


UNION_FIELDS = frozenset({"dataset", "optimizer", "activation"})
TAGS = DATASET_TAGS | set(LAYERS) | set(OPTIMIZERS) | set(ACTIVATIONS)


def field_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic location as `layers[3].activation`, dropping union tags."""
    path = ""
    previous: int | str | None = None
    for i, part in enumerate(loc):
        after_union = previous in UNION_FIELDS or (
            isinstance(previous, int) and i >= 2 and loc[i - 2] == "layers"
        )
        previous = part
        if after_union and part in TAGS:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-"):
            continue
        else:
            path += f".{part}" if path else part
    return path or "$"


def parse_spec(
    payload: Any, datasets: DatasetLookup | None = None, models: ModelLookup | None = None
) -> JobSpec:
    """Validate a decoded JSON body into a JobSpec, or raise SpecError with field paths.

    `datasets` resolves `{"dataset_id": ID}` among the caller's uploads, `models` an `init`'s
    `model_id` among the caller's models (None: not found).
    """
    if not isinstance(payload, dict):
        raise SpecError([{"field": "$", "message": "the job spec must be a JSON object"}])
    try:
        context = {DATASETS_CONTEXT: datasets, MODELS_CONTEXT: models}
        return JobSpec.model_validate(payload, context=context)
    except ValidationError as exc:
        details: list[dict[str, str]] = []
        for error in exc.errors(include_url=False):
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, SpecProblems):
                details.extend({"field": p, "message": m} for p, m in cause.problems)
            else:
                path = field_path(error["loc"])
                if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    path += ".type"
                elif error["type"] == "unknown_dataset" and isinstance(error["input"], dict):
                    path += ".builtin" if "builtin" in error["input"] else ""
                message = error["msg"].removeprefix("Value error, ")
                details.append({"field": path, "message": message})
        raise SpecError(details) from None


def to_stored(spec: JobSpec) -> dict[str, Any]:
    """The spec as stored on the job row, with every default filled in."""
    return spec.model_dump(mode="json")
