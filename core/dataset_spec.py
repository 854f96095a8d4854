"""The `dataset` part of a job spec: built-in datasets, inline data, and what shape each yields."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    create_model,
    model_validator,
)

from core.registry import Registry
from core.schema import Id, Strict

MAX_SAMPLES = 1_000_000
MAX_FEATURES = 10_000
MAX_CLASSES = 1_000
MAX_INLINE_ROWS = 100_000


@dataclass(frozen=True)
class DataShape:
    """What the model needs to know about a dataset before any data is loaded."""

    task: Literal["classification", "regression"]
    n_samples: int
    n_features: int
    n_classes: int = 0  # classification only
    n_targets: int = 1  # regression only


Samples = Annotated[int, Field(ge=10, le=MAX_SAMPLES)]
Seed = Annotated[int | None, Field(ge=0, le=2**32 - 1)]


class _GeneratorParams(Strict):
    def shape(self) -> DataShape:
        raise NotImplementedError


class MakeClassificationParams(_GeneratorParams):
    n_samples: Samples = 100
    n_features: int = Field(20, ge=1, le=MAX_FEATURES)
    n_informative: int = Field(2, ge=1, le=MAX_FEATURES)
    n_redundant: int = Field(2, ge=0, le=MAX_FEATURES)
    n_repeated: int = Field(0, ge=0, le=MAX_FEATURES)
    n_classes: int = Field(2, ge=2, le=MAX_CLASSES)
    n_clusters_per_class: int = Field(2, ge=1, le=100)
    weights: list[float] | None = None
    flip_y: float = Field(0.01, ge=0, le=1)
    class_sep: float = Field(1.0, gt=0, le=1e6)
    hypercube: bool = True
    shift: float | None = Field(0.0, ge=-1e6, le=1e6)
    scale: float | None = Field(1.0, gt=0, le=1e6)
    shuffle: bool = True
    random_state: Seed = None

    @model_validator(mode="after")
    def _fits(self) -> MakeClassificationParams:
        used = self.n_informative + self.n_redundant + self.n_repeated
        if used > self.n_features:
            raise ValueError(
                f"n_informative + n_redundant + n_repeated ({used}) must not exceed "
                f"n_features ({self.n_features})"
            )
        if self.n_informative < 60 and (
            self.n_classes * self.n_clusters_per_class > 2**self.n_informative
        ):
            raise ValueError("n_classes * n_clusters_per_class must be at most 2 ** n_informative")
        if self.weights is not None and len(self.weights) not in (
            self.n_classes,
            self.n_classes - 1,
        ):
            raise ValueError("weights must have n_classes or n_classes - 1 entries")
        return self

    def shape(self) -> DataShape:
        return DataShape("classification", self.n_samples, self.n_features, self.n_classes)


class MakeRegressionParams(_GeneratorParams):
    n_samples: Samples = 100
    n_features: int = Field(100, ge=1, le=MAX_FEATURES)
    n_informative: int = Field(10, ge=0, le=MAX_FEATURES)
    n_targets: int = Field(1, ge=1, le=100)
    bias: float = Field(0.0, ge=-1e6, le=1e6)
    effective_rank: int | None = Field(None, ge=1, le=MAX_FEATURES)
    tail_strength: float = Field(0.5, ge=0, le=1)
    noise: float = Field(0.0, ge=0, le=1e6)
    shuffle: bool = True
    random_state: Seed = None

    def shape(self) -> DataShape:
        return DataShape("regression", self.n_samples, self.n_features, n_targets=self.n_targets)


class MakeMoonsParams(_GeneratorParams):
    n_samples: Samples = 100
    shuffle: bool = True
    noise: float | None = Field(None, ge=0, le=1e3)
    random_state: Seed = None

    def shape(self) -> DataShape:
        return DataShape("classification", self.n_samples, 2, 2)


class MakeCirclesParams(MakeMoonsParams):
    factor: float = Field(0.8, gt=0, lt=1)


class MakeBlobsParams(_GeneratorParams):
    n_samples: Samples = 100
    n_features: int = Field(2, ge=1, le=MAX_FEATURES)
    centers: int = Field(3, ge=2, le=MAX_CLASSES)
    cluster_std: float = Field(1.0, gt=0, le=1e6)
    shuffle: bool = True
    random_state: Seed = None

    def shape(self) -> DataShape:
        return DataShape("classification", self.n_samples, self.n_features, self.centers)


class NoParams(Strict):
    pass


# (task, rows, features, classes or targets) of the datasets scikit-learn ships.
SHIPPED: dict[str, tuple[Literal["classification", "regression"], int, int, int]] = {
    "iris": ("classification", 150, 4, 3),
    "wine": ("classification", 178, 13, 3),
    "breast_cancer": ("classification", 569, 30, 2),
    "digits": ("classification", 1797, 64, 10),
    "diabetes": ("regression", 442, 10, 1),
}


class _Builtin(Strict):
    def shape(self) -> DataShape:
        raise NotImplementedError


class _Generated(_Builtin):
    """A scikit-learn generator: the data's shape follows from its parameters."""

    builtin: str
    params: _GeneratorParams

    def shape(self) -> DataShape:
        return self.params.shape()


# The scikit-learn generators a spec may name, each with its parameters' model.
GENERATORS: Registry[type[_GeneratorParams]] = Registry(
    "dataset generator",
    {  # type: ignore[arg-type]  # mypy types the classes by their pydantic metaclass
        "make_classification": MakeClassificationParams,
        "make_regression": MakeRegressionParams,
        "make_moons": MakeMoonsParams,
        "make_circles": MakeCirclesParams,
        "make_blobs": MakeBlobsParams,
    },
)


def _generated(name: str, params: type[_GeneratorParams]) -> type[_Generated]:
    """The spec model of `{"builtin": name, "params": {...}}` (MakeClassification, …)."""
    fields: dict[str, Any] = {"builtin": (Literal[name], ...), "params": (params, params())}
    title = "".join(part.title() for part in name.split("_"))
    return create_model(title, __base__=_Generated, **fields)


GENERATED = {name: _generated(name, params) for name, params in GENERATORS.items()}


class Shipped(_Builtin):
    builtin: Literal["iris", "wine", "breast_cancer", "digits", "diabetes"]
    params: NoParams = NoParams()

    def shape(self) -> DataShape:
        task, rows, features, width = SHIPPED[self.builtin]
        if task == "classification":
            return DataShape(task, rows, features, n_classes=width)
        return DataShape(task, rows, features, n_targets=width)


Label = int | str
Target = float | list[float]


class InlineData(Strict):
    X: list[list[float]] = Field(min_length=2, max_length=MAX_INLINE_ROWS)
    y: list[Label | Target] = Field(min_length=2, max_length=MAX_INLINE_ROWS)

    @model_validator(mode="after")
    def _rectangular(self) -> InlineData:
        width = len(self.X[0])
        if not 1 <= width <= MAX_FEATURES:
            raise ValueError(f"rows of X must have between 1 and {MAX_FEATURES} features")
        for i, row in enumerate(self.X):
            if len(row) != width:
                raise ValueError(f"X[{i}] has {len(row)} features; X[0] has {width}")
        if len(self.y) != len(self.X):
            raise ValueError(f"y has {len(self.y)} entries but X has {len(self.X)} rows")
        return self


def _is_label(value: object) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, str | int) and not isinstance(value, bool)


class Inline(Strict):
    inline: InlineData

    def shape_for(self, task: Literal["classification", "regression"]) -> DataShape:
        """Shape of the inline data read as `task`; raises ValueError if the labels do not fit."""
        rows, width = len(self.inline.X), len(self.inline.X[0])
        y = self.inline.y
        if task == "classification":
            if all(_is_label(v) for v in y) and len({type(v) for v in y}) == 1:
                n_classes = len(set(y))
            else:
                raise ValueError("class labels must be all integers or all strings")
            if n_classes < 2:
                raise ValueError("classification needs at least two distinct labels in y")
            return DataShape(task, rows, width, n_classes=n_classes)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in y):
            return DataShape(task, rows, width, n_targets=1)
        if all(isinstance(v, list) for v in y):
            widths = {len(v) for v in y}  # type: ignore[arg-type]
            if len(widths) != 1 or 0 in widths:
                raise ValueError("every target in y must have the same, non-zero width")
            return DataShape(task, rows, width, n_targets=widths.pop())
        raise ValueError("regression targets must be numbers, or lists of numbers of one width")


@dataclass(frozen=True)
class UploadedInfo:
    """What validation needs to know of an uploaded dataset."""

    rows: int
    n_features: int
    label_kind: str  # "int", "str" or "float"
    n_labels: int | None  # distinct labels; None for fractional or too many


# The validation context key holding a function from dataset id to UploadedInfo (or None).
DATASETS_CONTEXT = "datasets"


class Uploaded(Strict):
    dataset_id: Id
    _info: UploadedInfo | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> Uploaded:
        lookup = (info.context or {}).get(DATASETS_CONTEXT)
        if lookup is not None:
            found = lookup(self.dataset_id)
            if found is None:
                raise ValueError(f"no dataset with id {self.dataset_id!r}")
            self._info = found
        return self

    def shape_for(self, task: Literal["classification", "regression"]) -> DataShape:
        """Shape of the uploaded data read as `task`; raises ValueError if the labels do not fit."""
        found = self._info
        if found is None:
            raise ValueError("the dataset was not looked up (validate with its owner's datasets)")
        if task == "regression":
            if found.label_kind == "str":
                raise ValueError("the label column holds text: use a classification loss")
            return DataShape(task, found.rows, found.n_features, n_targets=1)
        if found.label_kind == "float":
            raise ValueError(
                "the label column holds fractional numbers: use mse, or whole-number class labels"
            )
        if found.n_labels is None or found.n_labels > MAX_CLASSES:
            raise ValueError(f"the label column has more than {MAX_CLASSES} distinct classes")
        if found.n_labels < 2:
            raise ValueError("classification needs at least two distinct labels")
        return DataShape(task, found.rows, found.n_features, n_classes=found.n_labels)


def _dataset_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    if "builtin" in value:
        name = value["builtin"]
        if not isinstance(name, str):
            return None
        if name in SHIPPED:
            return "shipped"
        return name if name in BUILTIN_NAMES else None
    for key in ("inline", "dataset_id"):
        if key in value:
            return key
    return None


BUILTIN_NAMES = (*GENERATORS.names, *SHIPPED)

if TYPE_CHECKING:
    _Datasets = _Generated | Shipped | Inline | Uploaded
else:
    _Datasets = Union[
        (
            *(Annotated[model, Tag(name)] for name, model in GENERATED.items()),
            Annotated[Shipped, Tag("shipped")],
            Annotated[Inline, Tag("inline")],
            Annotated[Uploaded, Tag("dataset_id")],
        )
    ]

DatasetSpec = Annotated[
    _Datasets,
    Discriminator(
        _dataset_tag,
        custom_error_type="unknown_dataset",
        custom_error_message=(
            "dataset must be {'builtin': NAME, 'params': {...}} with NAME one of "
            + ", ".join(BUILTIN_NAMES)
            + "; or {'inline': {'X': [[...]], 'y': [...]}}; or {'dataset_id': ID}"
        ),
    ),
]

DATASET_TAGS = frozenset({*GENERATORS.names, "shipped", "inline", "dataset_id"})


def n_test_rows(n_samples: int, test_size: float) -> int:
    """Rows held out for testing, as scikit-learn's train_test_split counts them."""
    return math.ceil(test_size * n_samples)


def n_fit_rows(n_train: int, validation_split: float) -> int:
    """Rows trained on once Keras's validation_split has taken the last fraction."""
    return math.floor(n_train * (1.0 - validation_split))
