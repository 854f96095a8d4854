"""SQLAlchemy models: tenants, API keys, dashboard sessions, jobs, per-epoch metrics, job
checkpoints, trained models, datasets, workers, the model registry, sweeps."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core import clock

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def utcnow() -> datetime:
    """This process's clock; what a worker writes uses the database's (`core.db.db_now`)."""
    return clock.utcnow()


def new_id() -> str:
    """A UUIDv7-style id: time-ordered, so sorting by id sorts by creation time."""
    millis = int(clock.wall_time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # SHA-256 of the key: a leaked database does not leak usable keys.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UiSession(Base):
    """A dashboard sign-in: its cookie carries a random id, and only this row makes it valid, so
    signing out (deleting the row) ends it on the server; it also ends at `expires_at`."""

    __tablename__ = "ui_sessions"

    # SHA-256 of the id in the cookie: a leaked table opens no session.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # SHA-256 of the API key signed in with: revoking the key ends the session too.
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_jobs_status_tenant_id", "status", "tenant_id", "id"),
        Index("ix_jobs_tenant_enqueued", "tenant_id", "enqueued_at"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        # A sweep's trial number is taken once: two controllers cannot both create trial n.
        UniqueConstraint("sweep_id", "trial", name="uq_jobs_sweep_trial"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    engine: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # Last time the id was sent to the broker; the reaper re-sends queued jobs sent long ago.
    enqueued_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    progress_epoch: Mapped[int] = mapped_column(default=0)
    progress_epochs: Mapped[int] = mapped_column(default=0)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Its worker is shutting down (warm): checkpoint at the next epoch's end and give it back.
    handback_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    model_id: Mapped[str | None] = mapped_column(String(36))
    # Wall time from claim to the worker's end of the job (for /metrics); NULL if it never ran.
    train_seconds: Mapped[float | None] = mapped_column(Float)
    # What the job costs (core.cost.Cost as a dict), computed when it was accepted.
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Who runs (or last ran) it: the Celery node and its pool process, "node pid N".
    worker: Mapped[str | None] = mapped_column(String(200))
    # The epoch the current attempt resumed from (its checkpoint's); NULL when it started afresh.
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer)
    # A sweep's trial: the sweep, the trial's number in it, and the values its space chose.
    sweep_id: Mapped[str | None] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), index=True
    )
    trial: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)


SWEEP_STATUSES = JOB_STATUSES


class Sweep(Base):
    """A search over job specs: its request, state and progress. Its trials are jobs
    (`Job.sweep_id`), which are the source of truth for what ran and how it went."""

    __tablename__ = "sweeps"
    __table_args__ = (
        Index("ix_sweeps_tenant_id", "tenant_id", "id"),
        Index("ix_sweeps_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # The request as validated (base spec with defaults, space, strategy, objective, ...).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    total: Mapped[int] = mapped_column(Integer)  # trials it will run
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # The sum of its trials' estimated costs (an upper bound for random and tpe).
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Worker(Base):
    """A worker process (Celery node): its pool size and the training speed it measured.

    Each worker refreshes its row on its timer; the dispatcher counts the slots of the workers
    seen lately, and the cost estimate divides a job's FLOP by their measured speed.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    concurrency: Mapped[int] = mapped_column(Integer)
    # Measured training speed per engine, FLOP per second (a moving average over its jobs).
    numpy_flops: Mapped[float | None] = mapped_column(Float)
    keras_flops: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobMetric(Base):
    __tablename__ = "job_metrics"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)


class JobCheckpoint(Base):
    """The latest checkpoint of a running job: enough to go on training after `epoch` as if it
    had never stopped. One row per job, replaced as training goes, deleted when the job ends."""

    __tablename__ = "job_checkpoints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer)  # the attempt that wrote it
    epoch: Mapped[int] = mapped_column(Integer)
    # Plain JSON: the random generator's state, the optimizer's step, the stop policy's state.
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Weights and optimizer slots as `.npz`, always read with allow_pickle=False.
    arrays: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    engine: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(16))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The portable artifact: `.npz` bytes, always read with allow_pickle=False.
    weights: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Its test-split metrics (core.evaluation); NULL for models trained before they were kept.
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Dataset(Base):
    """An uploaded CSV, parsed: its columns, the label column, and the arrays as `.npz`."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_tenant_id", "tenant_id", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(200))
    columns: Mapped[list[str]] = mapped_column(JSON)  # as in the header row, label included
    rows: Mapped[int] = mapped_column(Integer)
    # "int", "str" (class labels) or "float" (regression targets only).
    label_kind: Mapped[str] = mapped_column(String(8))
    label_counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(Integer)  # of the CSV as uploaded
    # X (float64) and y as `.npz`, always read with allow_pickle=False.
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegisteredModel(Base):
    """A tenant's named model (the registry): numbered versions, each a trained model, and
    aliases (`production`, `staging`, ...) that point at one version each."""

    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_registered_models_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    # The highest version number ever given: numbers are never reused after a deletion.
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    """Version `version` of a registered model: one trained model of the same tenant."""

    __tablename__ = "model_versions"

    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    """An alias of a registered model and the version it points at (one row: moving it is one
    UPDATE)."""

    __tablename__ = "model_aliases"

    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RegistryEvent(Base):
    """One change to a registered model: what, who (tenant and key prefix) and when."""

    __tablename__ = "registry_events"
    __table_args__ = (Index("ix_registry_events_model", "registered_model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    registered_model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE")
    )
    action: Mapped[str] = mapped_column(String(32))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    tenant_id: Mapped[str] = mapped_column(String(64))
    key_prefix: Mapped[str | None] = mapped_column(String(8))
    at: Mapped[datetime] = mapped_column(default=utcnow)
