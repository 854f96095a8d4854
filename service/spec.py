"""The job spec (v1): parsed once into typed objects, with limits and cross-field checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from service.dataset_spec import (
    DATASET_TAGS,
    DATASETS_CONTEXT,
    MAX_SAMPLES,
    DatasetSpec,
    DataShape,
    Inline,
    Strict,
    Uploaded,
    UploadedInfo,
    n_fit_rows,
    n_test_rows,
)

DatasetLookup = Callable[[str], UploadedInfo | None]

MAX_LAYERS = 64
MAX_UNITS = 4096
MAX_PARAMS = 5_000_000
MAX_EPOCHS = 10_000
# Epochs times training rows: bounds how much work one job may ask for.
MAX_EPOCH_SAMPLES = 500_000_000

ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")
INITIALIZERS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform")
LOSSES = (
    "mse",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
)
CLASSIFICATION_LOSSES = frozenset(LOSSES[1:])

Activation = Literal["relu", "sigmoid", "tanh", "softmax", "linear"]
Initializer = Literal["he_normal", "he_uniform", "glorot_normal", "glorot_uniform"]
Loss = Literal[
    "mse", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"
]


class Dense(Strict):
    type: Literal["dense"]
    units: int = Field(ge=1, le=MAX_UNITS)
    activation: Activation = "linear"
    kernel_initializer: Initializer = "glorot_uniform"


class BatchNorm(Strict):
    type: Literal["batch_norm"]
    momentum: float = Field(0.99, ge=0, lt=1)
    epsilon: float = Field(1e-3, gt=0, le=1)


class Dropout(Strict):
    type: Literal["dropout"]
    rate: float = Field(ge=0, lt=1)


Layer = Annotated[Dense | BatchNorm | Dropout, Field(discriminator="type")]

LearningRate = Annotated[float, Field(gt=0, le=100)]
Decay = Annotated[float, Field(ge=0, lt=1)]
Epsilon = Annotated[float, Field(gt=0, le=1)]


class SGD(Strict):
    type: Literal["sgd"]
    learning_rate: LearningRate = 0.01
    momentum: Decay = 0.0
    nesterov: bool = False


class RMSprop(Strict):
    type: Literal["rmsprop"]
    learning_rate: LearningRate = 0.001
    rho: Decay = 0.9
    epsilon: Epsilon = 1e-7


class Adam(Strict):
    type: Literal["adam"]
    learning_rate: LearningRate = 0.001
    beta_1: Decay = 0.9
    beta_2: Decay = 0.999
    epsilon: Epsilon = 1e-7


def _optimizer_shorthand(value: Any) -> Any:
    """Accept "adam" for {"type": "adam"}, as Keras's compile() does."""
    return {"type": value} if isinstance(value, str) else value


Optimizer = Annotated[
    SGD | RMSprop | Adam, Field(discriminator="type"), BeforeValidator(_optimizer_shorthand)
]


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


KERAS_NAMES = {"dense": "dense", "batch_norm": "batch_normalization", "dropout": "dropout"}


def summarize_layers(
    layers: list[Dense | BatchNorm | Dropout], n_features: int
) -> list[LayerSummary]:
    """Per-layer output shape and parameter count, counted as Keras counts them."""
    seen: dict[str, int] = {}
    summary = []
    width = n_features
    for layer in layers:
        base = KERAS_NAMES[layer.type]
        count = seen.get(base, 0)
        seen[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        if isinstance(layer, Dense):
            params = width * layer.units + layer.units
            width = layer.units
            trainable = params
        elif isinstance(layer, BatchNorm):
            params, trainable = 4 * width, 2 * width  # moving mean/variance are not trained
        else:
            params = trainable = 0
        summary.append(LayerSummary(name, layer.type, (None, width), params, trainable))
    return summary


class JobSpec(Strict):
    name: str | None = Field(None, max_length=200)
    engine: Literal["numpy", "keras"] = "numpy"
    dataset: DatasetSpec
    split: Split = Split()
    preprocessing: Preprocessing = Preprocessing()
    layers: list[Layer] = Field(min_length=1, max_length=MAX_LAYERS)
    loss: Loss
    optimizer: Optimizer = RMSprop(type="rmsprop")
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=MAX_SAMPLES)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    early_stopping: EarlyStopping | None = None
    max_seconds: float | None = Field(None, gt=0, le=7 * 24 * 3600)

    @property
    def task(self) -> Literal["classification", "regression"]:
        return "classification" if self.loss in CLASSIFICATION_LOSSES else "regression"

    def data_shape(self) -> DataShape:
        if isinstance(self.dataset, Inline | Uploaded):
            return self.dataset.shape_for(self.task)
        return self.dataset.shape()

    def summary(self) -> list[LayerSummary]:
        return summarize_layers(list(self.layers), self.data_shape().n_features)

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
        want = "mse" if shape.task == "regression" else "a cross-entropy loss"
        yield ("loss", f"{spec.loss} does not fit a {shape.task} dataset; use {want}")
    elif not isinstance(out, Dense):
        yield (f"layers[{last}]", "the last layer must be a dense layer")
    elif spec.loss == "binary_crossentropy":
        if shape.n_classes != 2:
            yield (
                "loss",
                f"binary_crossentropy needs 2 classes; the dataset has {shape.n_classes}",
            )
        if out.units != 1:
            yield (f"layers[{last}].units", "binary_crossentropy needs 1 output unit")
        if out.activation != "sigmoid":
            yield (f"layers[{last}].activation", "binary_crossentropy needs a sigmoid output")
    elif spec.loss in CLASSIFICATION_LOSSES:
        if out.units != shape.n_classes:
            yield (
                f"layers[{last}].units",
                f"{spec.loss} needs one output unit per class: {shape.n_classes}, not {out.units}",
            )
        if out.activation != "softmax":
            yield (f"layers[{last}].activation", f"{spec.loss} needs a softmax output")
    elif out.units != shape.n_targets:
        yield (
            f"layers[{last}].units",
            f"the dataset has {shape.n_targets} target(s), so the output needs {shape.n_targets}"
            f" unit(s), not {out.units}",
        )
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
        if isinstance(layer, Dense) and layer.activation == "softmax":
            yield (f"layers[{i}].activation", "softmax is only allowed on the output layer")

    total = sum(s.params for s in summarize_layers(list(spec.layers), shape.n_features))
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


UNION_FIELDS = frozenset({"dataset", "optimizer"})
TAGS = DATASET_TAGS | {"dense", "batch_norm", "dropout", "sgd", "rmsprop", "adam"}


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


def parse_spec(payload: Any, datasets: DatasetLookup | None = None) -> JobSpec:
    """Validate a decoded JSON body into a JobSpec, or raise SpecError with field paths.

    `datasets` resolves `{"dataset_id": ID}` among the caller's uploads (None: not found).
    """
    if not isinstance(payload, dict):
        raise SpecError([{"field": "$", "message": "the job spec must be a JSON object"}])
    try:
        return JobSpec.model_validate(payload, context={DATASETS_CONTEXT: datasets})
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
