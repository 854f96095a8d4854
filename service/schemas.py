"""Response schemas: every JSON answer is built from these, and the OpenAPI document from them.

Requests use the validating models directly. Each `from_row` builds the answer from its SQL row;
`dump()` is the JSON body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.cost import Cost
from core.models import Dataset, Job, JobMetric, Model, Sweep
from core.spec import JobSpec
from core.sweeps import Summary, TrialRow


def iso(value: datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC with a `Z`."""
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they are stored in UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def same_names(row: object, *names: str) -> dict[str, Any]:
    """The row's attributes for the fields named as its columns are."""
    return {name: getattr(row, name) for name in names}


def absent(value: Any) -> bool:
    """Whether an optional field is left out of the JSON (it is None)."""
    return value is None


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The JSON body (fields marked `exclude_if=absent` are left out when None)."""
        return self.model_dump(mode="json")


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
        description="diverged, timeout, cancelled, worker_lost, invalid_spec, internal_error, "
        "or pruned (a sweep's trial stopped by its pruner)",
    )
    message: str | None
    epoch: int | None = Field(
        None, exclude_if=absent, description="pruned: the epoch after which it was stopped"
    )
    rule: str | None = Field(
        None,
        exclude_if=absent,
        description="pruned: the pruner: median, successive_halving or hyperband",
    )

    @classmethod
    def of(cls, job: Job) -> JobError | None:
        """The job's error (with the epoch and rule when a pruner stopped it), or None."""
        if not job.error_code:
            return None
        pruned = (job.info or {}).get("pruned") or {}
        return cls(
            code=job.error_code,
            message=job.error_message,
            epoch=pruned.get("epoch"),
            rule=pruned.get("rule"),
        )


class TrialTag(Out):
    """What makes a job a sweep's trial."""

    sweep_id: str
    trial: int = Field(description="The trial's number in its sweep, from 0.")
    params: dict[str, Any] = Field(description="The values the search space chose, by path.")


class Training(Out):
    stop_reason: Literal["completed", "early_stopping", "max_seconds"]
    stopped_epoch: int
    best_epoch: int
    restored_best_weights: bool


class CostOut(Out):
    params: int
    fit_rows: int = Field(description="Rows trained on per epoch (the validation rows excluded).")
    flops_per_epoch: int = Field(description="6 x params x fit_rows.")
    flops: int = Field(description="flops_per_epoch x epochs: what MAX_JOB_FLOPS bounds.")
    data_bytes: int = Field(description="The data's memory while it trains (MAX_DATA_BYTES).")
    estimated_seconds: float | None = Field(
        description="flops / the workers' measured speed; null until a worker has measured one."
    )


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
    resumed_from_epoch: int | None = Field(
        description="The epoch the current attempt resumed from (its checkpoint's): a retried "
        "job keeps the epochs up to it and trains on from there. Null when it started afresh."
    )
    cancel_requested: bool
    training: Training | None
    cost: CostOut | None = Field(description="What the job costs, as worked out at submission.")
    spec: dict[str, Any] = Field(description="The job spec, with every default filled in.")
    sweep: TrialTag | None = Field(
        None, exclude_if=absent, description="Present on a sweep's trials only."
    )

    @classmethod
    def from_row(cls, job: Job) -> JobOut:
        """The job as clients see it."""
        info = job.info or {}
        error = JobError.of(job)
        sweep = None
        if job.sweep_id is not None:
            sweep = TrialTag(sweep_id=job.sweep_id, trial=job.trial or 0, params=job.params or {})
        return cls(
            **same_names(job, "id", "name", "status", "engine", "model_id", "attempts", "spec"),
            resumed_from_epoch=job.resumed_from_epoch,
            cancel_requested=job.cancel_requested,
            created_at=iso(job.created_at),
            started_at=iso(job.started_at),
            finished_at=iso(job.finished_at),
            progress=Progress(epoch=job.progress_epoch, epochs=job.progress_epochs),
            metrics=job.metrics or {},
            error=error,
            training=info if "stop_reason" in info else None,
            cost=job.cost,
            sweep=sweep,
        )


class JobList(Out):
    items: list[JobOut]
    next_cursor: str | None


class Epoch(Out):
    epoch: int
    loss: float | None
    accuracy: float | None = Field(None, exclude_if=absent)
    val_loss: float | None = Field(None, exclude_if=absent)
    val_accuracy: float | None = Field(None, exclude_if=absent)
    seconds: float = Field(description="This epoch's own training time.")

    @classmethod
    def from_row(cls, row: JobMetric) -> Epoch:
        """One recorded epoch (its columns are named as the fields are)."""
        return cls.model_validate(row, from_attributes=True)


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
    cost: CostOut

    @classmethod
    def from_spec(cls, spec: JobSpec, cost: Cost) -> DryRun:
        """The model a valid spec describes: each layer's output shape and parameters, and its
        cost."""
        counts = spec.param_counts()
        return cls(
            valid=True,
            task=spec.task,
            input_shape=[None, spec.data_shape().n_features],
            layers=[LayerOut.model_validate(s.as_dict()) for s in spec.summary()],
            total_params=counts.total,
            trainable_params=counts.trainable,
            non_trainable_params=counts.non_trainable,
            cost=CostOut.model_validate(cost.as_dict()),
        )


# -- a model's evaluation on its test split (core.evaluation) --------------------------------


class ClassMetrics(Out):
    label: int | str = Field(description="The class, as in the training data")
    precision: float | None
    recall: float | None
    f1: float | None
    support: int = Field(description="Test rows of this class")


class ClassificationEvaluation(Out):
    task: Literal["classification"]
    split: Literal["test"]
    n_samples: int
    labels: list[int | str] = Field(description="The classes, in the matrix's order")
    confusion_matrix: list[list[int]] = Field(
        description="Rows: the actual class; columns: the predicted class (in `labels` order)"
    )
    per_class: list[ClassMetrics]
    accuracy: float | None
    macro_f1: float | None
    weighted_f1: float | None
    log_loss: float | None
    roc_auc: float | None = Field(
        description="null when undefined (a class absent from the test split)"
    )
    roc_auc_average: Literal["binary", "ovr_macro"] = Field(
        description="binary: on the second class's probability; ovr_macro: one-vs-rest, "
        "the unweighted mean over classes"
    )


class ResidualSummary(Out):
    mean: float | None
    std: float | None
    min: float | None
    p05: float | None
    q25: float | None
    median: float | None
    q75: float | None
    p95: float | None
    max: float | None


class Histogram(Out):
    edges: list[float | None]
    counts: list[int]


class RegressionEvaluation(Out):
    task: Literal["regression"]
    split: Literal["test"]
    n_samples: int
    n_targets: int
    mae: float | None
    rmse: float | None
    r2: float | None = Field(description="Averaged over targets")
    residuals: ResidualSummary = Field(description="Of predicted - actual, over all targets")
    residual_histogram: Histogram
    points: list[list[float | None]] = Field(
        description="Up to 200 [actual, predicted] pairs of the first target (for the plot)"
    )


Evaluation = Annotated[ClassificationEvaluation | RegressionEvaluation, Field(discriminator="task")]


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
    evaluation: Evaluation | None = Field(
        None,
        description="Metrics on the test split; null for models trained before they were kept",
    )

    @classmethod
    def from_row(cls, model: Model) -> ModelOut:
        """A trained model's metadata (its weights stay in the database)."""
        meta = model.meta
        return cls(
            **same_names(model, "id", "job_id", "engine", "task", "evaluation"),
            **{name: meta[name] for name in ("n_features", "layers", "params", "metrics")},
            classes=meta["classes"] if model.task == "classification" else None,
        )


class Prediction(Out):
    model_id: str
    predictions: list[Any] = Field(
        description="Class labels (as in the training data), or values for regression."
    )
    probabilities: list[list[float]] | None = Field(
        None,
        description="Per-class probabilities, in the order of the model's classes.",
        exclude_if=absent,
    )


class Health(Out):
    status: str
    checks: dict[str, str] | None = Field(None, exclude_if=absent)


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

    @classmethod
    def from_row(cls, dataset: Dataset) -> DatasetOut:
        """An upload's description (never its arrays)."""
        return cls(
            **same_names(dataset, "id", "name", "rows", "columns", "label", "label_kind"),
            features=[c for c in dataset.columns if c != dataset.label],
            label_counts=dataset.label_counts,
            bytes=dataset.size_bytes,
            created_at=iso(dataset.created_at),
        )


class DatasetList(Out):
    items: list[DatasetOut]
    next_cursor: str | None


# --- The model registry -------------------------------------------------------------------


class AliasOut(Out):
    alias: str
    version: int


class ModelVersionOut(Out):
    name: str = Field(description="The registered model's name.")
    version: int
    model_id: str
    created_at: str
    aliases: list[str] = Field(description="The aliases pointing at this version.")


class RegisteredModelOut(Out):
    name: str
    description: str | None
    created_at: str
    updated_at: str
    latest_version: int | None = Field(description="The highest version number present.")
    aliases: list[AliasOut]


class RegisteredModelList(Out):
    items: list[RegisteredModelOut]
    next_cursor: str | None


class ModelVersionList(Out):
    items: list[ModelVersionOut]


class RegistryEventOut(Out):
    id: int
    action: Literal[
        "created", "updated", "version_added", "version_deleted", "alias_set", "alias_deleted"
    ]
    details: dict[str, Any]
    tenant: str = Field(description="The tenant whose API key made the change.")
    key_prefix: str | None = Field(description="The first characters of that API key.")
    at: str


class RegistryHistory(Out):
    name: str
    items: list[RegistryEventOut] = Field(description="Newest first.")
    next_cursor: str | None


# --- The Open Inference Protocol (KServe V2) ----------------------------------------------


class V2Error(Out):
    error: str


class V2ServerMetadata(Out):
    name: str
    version: str
    extensions: list[str]


class V2Live(Out):
    live: bool


class V2Ready(Out):
    ready: bool


class V2ModelReady(Out):
    name: str
    ready: bool


class V2Tensor(Out):
    name: str
    datatype: Literal["FP32", "FP64", "INT64", "BYTES"]
    shape: list[int]


class V2ModelMetadata(Out):
    name: str
    versions: list[str] | None = Field(None, exclude_if=absent)
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2OutputTensor(V2Tensor):
    data: list[Any] = Field(description="Row-major, flattened.")


class V2InferResponse(Out):
    model_name: str
    model_version: str | None = Field(None, exclude_if=absent)
    id: str | None = Field(None, exclude_if=absent)
    outputs: list[V2OutputTensor]


class SweepProgress(Out):
    finished: int = Field(description="Trials in a terminal state.")
    total: int = Field(description="Trials the sweep runs (max_trials, or the grid's size).")


class Best(Out):
    job_id: str
    model_id: str | None
    value: float = Field(description="The objective of this trial.")
    params: dict[str, Any]


class TrialOut(Out):
    job_id: str
    trial: int
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    params: dict[str, Any]
    objective: float | None = Field(
        description="The objective metric's final value (its last one for a trial that stopped)."
    )
    metrics: dict[str, float | None]
    epochs: int = Field(description="Epochs run.")
    seconds: float | None = Field(description="Training wall time, claim to end.")
    model_id: str | None
    error: JobError | None = Field(description="Why it stopped: e.g. pruned, with epoch and rule.")

    @classmethod
    def from_trial(cls, row: TrialRow) -> TrialOut:
        return cls.model_validate(row.as_dict())


class SweepProblem(Out):
    code: str
    message: str | None


class SweepObjective(Out):
    metric: str
    direction: Literal["minimize", "maximize"]


class SweepOut(Out):
    id: str
    name: str | None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: SweepProgress
    best: Best | None
    leaderboard: list[TrialOut] | None = Field(
        None,
        exclude_if=absent,
        description="Best first by the objective; ended trials without a value after, pending "
        "(running, then queued) last. Left out of listings.",
    )
    strategy: Literal["grid", "random", "tpe"]
    objective: SweepObjective
    max_trials: int
    max_parallel: int
    pruner: dict[str, Any] | None
    seed: int
    space: dict[str, Any]
    spec: dict[str, Any] = Field(description="The base job spec, with every default filled in.")
    cancel_requested: bool
    error: SweepProblem | None
    cost: CostOut | None = Field(description="The sum of its trials' estimated costs.")

    @classmethod
    def from_row(cls, sweep: Sweep, summary: Summary, *, board: bool = True) -> SweepOut:
        """The sweep as clients see it, with its trials' summary."""
        request = sweep.request
        best = None
        if summary.best is not None and summary.best.objective is not None:
            best = Best(
                job_id=summary.best.job_id,
                model_id=summary.best.model_id,
                value=summary.best.objective,
                params=summary.best.params,
            )
        error = (
            SweepProblem(code=sweep.error_code, message=sweep.error_message)
            if sweep.error_code
            else None
        )
        return cls(
            **same_names(sweep, "id", "name", "status", "cancel_requested"),
            created_at=iso(sweep.created_at),
            started_at=iso(sweep.started_at),
            finished_at=iso(sweep.finished_at),
            progress=SweepProgress(finished=summary.finished, total=summary.total),
            best=best,
            leaderboard=[TrialOut.from_trial(t) for t in summary.board] if board else None,
            **{k: request[k] for k in ("strategy", "objective", "max_trials", "max_parallel")},
            **{k: request[k] for k in ("pruner", "seed", "space", "spec")},
            error=error,
            cost=sweep.cost,
        )


class SweepList(Out):
    items: list[SweepOut] = Field(description="Each without its leaderboard.")
    next_cursor: str | None


class SweepDryRun(Out):
    valid: bool
    strategy: Literal["grid", "random", "tpe"]
    total: int = Field(description="Trials it would run.")
    trials: list[dict[str, Any]] | None = Field(
        None, exclude_if=absent, description="grid: every trial's values, in the order they run."
    )
    space: dict[str, Any] | None = Field(
        None, exclude_if=absent, description="random and tpe: the space searched."
    )
    largest: dict[str, Any] = Field(
        description="The trial with the most parameters: its values and total_params."
    )
    cost: CostOut
