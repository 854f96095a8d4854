"""Spec validation: every problem answers with its field path; the summary counts like Keras."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from core.layers import Dense
from core.optimizers import Adam
from core.spec import JobSpec, SpecError, parse_spec
from tests.support import SEED_SPEC

Edit = Callable[[dict[str, Any]], None]


def seed() -> dict[str, Any]:
    return copy.deepcopy(SEED_SPEC)


def problems(edit: Edit) -> list[dict[str, str]]:
    spec = seed()
    edit(spec)
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    return info.value.details


def set_path(path: str, value: Any) -> Edit:
    def edit(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = spec
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return edit


DELETE = object()

BAD_SPECS: list[tuple[str, Edit, str, str]] = [
    ("unknown layer type", set_path("layers.1", {"type": "conv2d"}), "layers[1].type", "dense"),
    ("unknown activation", set_path("layers.3.activation", "mish"), "layers[3].activation", "relu"),
    ("unknown loss", set_path("loss", "hinge"), "loss", "sparse_categorical_crossentropy"),
    ("unknown optimizer", set_path("optimizer", {"type": "adamw"}), "optimizer.type", "rmsprop"),
    ("unknown engine", set_path("engine", "torch"), "engine", "keras"),
    (
        "unknown initializer",
        set_path("layers.0.kernel_initializer", "zeros"),
        "layers[0].kernel_initializer",
        "he_normal",
    ),
    ("unknown dataset", set_path("dataset.builtin", "mnist"), "dataset.builtin", "iris"),
    ("zero units", set_path("layers.0.units", 0), "layers[0].units", "greater than"),
    ("too many units", set_path("layers.0.units", 100_000), "layers[0].units", "less than"),
    ("dropout rate 1", set_path("layers.2.rate", 1.0), "layers[2].rate", "less than"),
    ("dropout without rate", set_path("layers.2.rate", DELETE), "layers[2].rate", "required"),
    (
        "negative learning rate",
        set_path("optimizer.learning_rate", -0.1),
        "optimizer.learning_rate",
        "greater than",
    ),
    ("unknown optimizer field", set_path("optimizer.lr", 0.1), "optimizer.lr", "not permitted"),
    ("zero epochs", set_path("epochs", 0), "epochs", "greater than"),
    ("string batch size", set_path("batch_size", "big"), "batch_size", "integer"),
    ("a number as a string", set_path("layers.0.units", "64"), "layers[0].units", "integer"),
    ("a boolean as an integer", set_path("layers.0.units", True), "layers[0].units", "integer"),
    ("a fraction as an integer", set_path("epochs", 2.5), "epochs", "integer"),
    (
        "a boolean as a number",
        set_path("optimizer.learning_rate", True),
        "optimizer.learning_rate",
        "number",
    ),
    (
        "a number as a boolean",
        set_path("preprocessing.standardize", 1),
        "preprocessing.standardize",
        "boolean",
    ),
    ("test_size of 1", set_path("split.test_size", 1.0), "split.test_size", "less than"),
    ("output width vs classes", set_path("layers.9.units", 4), "layers[9].units", "3"),
    (
        "softmax missing on output",
        set_path("layers.9.activation", "relu"),
        "layers[9].activation",
        "softmax",
    ),
    ("mse on a classification set", set_path("loss", "mse"), "loss", "classification"),
    (
        "last layer not dense",
        set_path("layers.9", {"type": "dropout", "rate": 0.1}),
        "layers[9]",
        "dense",
    ),
    ("no layers", set_path("layers", []), "layers", "at least 1"),
    (
        "generator parameter out of range",
        set_path("dataset.params.n_samples", 5),
        "dataset.params.n_samples",
        "greater than",
    ),
    (
        "unknown generator parameter",
        set_path("dataset.params.colour", "red"),
        "dataset.params.colour",
        "not permitted",
    ),
    (
        "too many samples",
        set_path("dataset.params.n_samples", 10**8),
        "dataset.params.n_samples",
        "less than",
    ),
    ("zero batch size", set_path("batch_size", 0), "batch_size", "greater than"),
    (
        "infinite learning rate",
        set_path("optimizer.learning_rate", float("inf")),
        "optimizer.learning_rate",
        "finite",
    ),
    ("NUL in the name", set_path("name", "a\x00b"), "name", "NUL"),
    ("unknown top-level field", set_path("callbacks", []), "callbacks", "not permitted"),
    (
        "softmax in a hidden layer",
        set_path("layers.0.activation", "softmax"),
        "layers[0].activation",
        "output layer",
    ),
]


@pytest.mark.parametrize(
    ("edit", "field", "mentions"),
    [pytest.param(e, f, m, id=name) for name, e, f, m in BAD_SPECS],
)
def test_bad_spec_names_the_field(edit: Edit, field: str, mentions: str) -> None:
    details = problems(edit)
    fields = [d["field"] for d in details]
    assert field in fields, details
    message = next(d["message"] for d in details if d["field"] == field)
    assert mentions in message


def test_epochs_limit_uses_training_rows() -> None:
    spec = seed()
    spec["dataset"]["params"]["n_samples"] = 1_000_000
    spec["epochs"] = 1_000
    assert [d["field"] for d in problems(lambda s: s.update(spec))] == ["epochs"]


def test_binary_crossentropy_needs_two_classes_and_one_sigmoid_unit() -> None:
    details = problems(set_path("loss", "binary_crossentropy"))
    assert {d["field"] for d in details} == {"loss", "layers[9].units", "layers[9].activation"}


def test_inline_data_problems_have_paths() -> None:
    def ragged(spec: dict[str, Any]) -> None:
        spec["dataset"] = {"inline": {"X": [[1, 2], [3, float("nan")]], "y": [0, 1]}}

    assert problems(ragged)[0]["field"] == "dataset.inline.X[1][1]"

    def mixed_labels(spec: dict[str, Any]) -> None:
        spec["dataset"] = {"inline": {"X": [[1.0], [2.0], [3.0]], "y": [0, "a", 1]}}

    assert problems(mixed_labels)[0]["field"] == "dataset"


def test_not_an_object() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec([1, 2])
    assert info.value.details[0]["field"] == "$"


def test_seed_summary_counts_parameters_as_keras() -> None:
    summary = parse_spec(seed()).summary()
    total = sum(s.params for s in summary)
    trainable = sum(s.trainable_params for s in summary)
    assert (total, total - trainable) == (4451, 224)
    assert [s.output_shape for s in summary][:3] == [(None, 64)] * 3
    assert [s.name for s in summary][:5] == [
        "dense",
        "batch_normalization",
        "dropout",
        "dense_1",
        "batch_normalization_1",
    ]


def test_defaults_follow_keras() -> None:
    spec = JobSpec.model_validate(
        {
            "dataset": {"builtin": "iris"},
            "layers": [{"type": "dense", "units": 3, "activation": "softmax"}],
            "loss": "sparse_categorical_crossentropy",
            "optimizer": "adam",
        }
    )
    assert (spec.engine, spec.epochs, spec.batch_size) == ("numpy", 1, 32)
    assert isinstance(spec.optimizer, Adam) and spec.optimizer.epsilon == 1e-7
    assert isinstance(spec.layers[0], Dense)
    assert spec.layers[0].kernel_initializer == "glorot_uniform"
    default_optimizer = JobSpec.model_validate(
        {
            "dataset": {"builtin": "diabetes"},
            "layers": [{"type": "dense", "units": 1}],
            "loss": "mse",
        }
    ).optimizer
    assert default_optimizer.type == "rmsprop" and default_optimizer.learning_rate == 0.001


def test_inline_string_labels_are_a_classification_set() -> None:
    spec = parse_spec(
        {
            "dataset": {"inline": {"X": [[0.0], [1.0], [2.0], [3.0]], "y": ["a", "b", "a", "c"]}},
            "layers": [{"type": "dense", "units": 3, "activation": "softmax"}],
            "loss": "sparse_categorical_crossentropy",
            "split": {"test_size": 0.25},
        }
    )
    assert spec.data_shape().n_classes == 3


def test_resource_limits_on_layers_and_inline_rows() -> None:
    too_deep = problems(set_path("layers", [{"type": "dense", "units": 3}] * 65))
    assert too_deep[0]["field"] == "layers" and "at most 64" in too_deep[0]["message"]

    def too_many_rows(spec: dict[str, Any]) -> None:
        spec["dataset"] = {"inline": {"X": [[0.0]] * 100_001, "y": [0] * 100_001}}

    fields = [d["field"] for d in problems(too_many_rows)]
    assert "dataset.inline.X" in fields and "dataset.inline.y" in fields


def test_too_many_parameters() -> None:
    wide = [{"type": "dense", "units": 4096, "activation": "relu"}] * 3
    edit = set_path("layers", [*wide, {"type": "dense", "units": 3, "activation": "softmax"}])
    details = problems(edit)
    assert details[0]["field"] == "layers" and "parameters" in details[0]["message"]
