"""Response schemas, for the OpenAPI document (requests use the validating models directly)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Out):
    code: str = Field(examples=["invalid_spec"])
    message: str
    details: list[dict[str, Any]] = Field(
        description="One entry per problem; for validation errors {field, message}."
    )


class ErrorResponse(Out):
    error: ErrorBody


class Progress(Out):
    epoch: int
    epochs: int


class JobError(Out):
    code: str = Field(
        examples=["diverged"],
        description="diverged, timeout, cancelled, worker_lost, invalid_spec or internal_error",
    )
    message: str | None


class Training(Out):
    stop_reason: Literal["completed", "early_stopping", "max_seconds"]
    stopped_epoch: int
    best_epoch: int
    restored_best_weights: bool


class JobOut(Out):
    id: str
    name: str | None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    engine: Literal["numpy", "keras"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: Progress
    metrics: dict[str, float | None] = Field(
        description="Latest or final loss, accuracy, val_loss, val_accuracy, test_loss, "
        "test_accuracy (those that apply)."
    )
    error: JobError | None
    model_id: str | None
    attempts: int
    cancel_requested: bool
    training: Training | None
    spec: dict[str, Any] = Field(description="The job spec, with every default filled in.")


class JobList(Out):
    items: list[JobOut]
    next_cursor: str | None


class Epoch(Out):
    epoch: int
    loss: float | None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float = Field(description="This epoch's own training time.")


class Metrics(Out):
    job_id: str
    history: list[Epoch]


class LayerOut(Out):
    name: str
    type: str
    output_shape: list[int | None]
    params: int
    trainable_params: int


class DryRun(Out):
    valid: bool
    task: Literal["classification", "regression"]
    input_shape: list[int | None]
    layers: list[LayerOut]
    total_params: int
    trainable_params: int
    non_trainable_params: int


class ModelOut(Out):
    id: str
    job_id: str
    engine: Literal["numpy", "keras"]
    task: Literal["classification", "regression"]
    n_features: int
    classes: list[int | str] | None
    layers: list[LayerOut]
    params: dict[str, int]
    metrics: dict[str, float | None]


class Prediction(Out):
    model_id: str
    predictions: list[Any] = Field(
        description="Class labels (as in the training data), or values for regression."
    )
    probabilities: list[list[float]] | None = Field(
        None, description="Per-class probabilities, in the order of the model's classes."
    )


class Health(Out):
    status: str
    checks: dict[str, str] | None = None


class DatasetOut(Out):
    id: str
    name: str
    rows: int
    columns: list[str] = Field(description="As in the CSV's header row, label included")
    features: list[str]
    label: str
    label_kind: Literal["int", "str", "float"] = Field(
        description="Whole numbers or text can be class labels; fractional numbers only targets"
    )
    label_counts: dict[str, int] | None = Field(
        description="Rows per label, for labels that can be classes"
    )
    bytes: int
    created_at: str


class DatasetList(Out):
    items: list[DatasetOut]
    next_cursor: str | None
