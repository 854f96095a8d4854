"""A job's life on a worker: claim it, train it, record every epoch, end it with a reason.

Plain functions over the database; the Celery task is a thin wrapper around `run_job`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update

from core.artifact import FORMAT_VERSION, Artifact
from core.datasets import PreparedData, prepare, uploaded_arrays
from core.db import Database, rowcount
from core.models import Job, JobMetric, Model, new_id, utcnow
from core.registry import Registry
from core.spec import JobSpec, SpecError, parse_spec
from core.uploads import info_lookup
from worker.engines.base import (
    Diverged,
    EngineResult,
    EpochCallback,
    EpochRecord,
    finite_or_none,
)

log = logging.getLogger(__name__)

Engine = Callable[[JobSpec, PreparedData, EpochCallback], EngineResult]


def _numpy_engine(spec: JobSpec, data: PreparedData, cb: EpochCallback) -> EngineResult:
    from worker.engines.numpy_engine.training import train

    return train(spec, data, cb)


def _keras_engine(spec: JobSpec, data: PreparedData, cb: EpochCallback) -> EngineResult:
    from worker.engines.keras_engine import train  # imports TensorFlow: only inside the task

    return train(spec, data, cb)


ENGINES: Registry[Engine] = Registry("engine", {"numpy": _numpy_engine, "keras": _keras_engine})


class JobCancelled(Exception):
    """The job's owner asked for it to stop."""


class Superseded(Exception):
    """The job was given to another attempt (this worker was presumed dead): stop, write nothing."""


def claim(db: Database, job_id: str) -> Job | None:
    """Move a queued job to running (attempts + 1); None if it is not queued any more.

    The attempt number is the fencing token: every later write of this run is conditional on
    it, so a run that was presumed dead and replaced cannot overwrite its successor's work.
    """
    now = utcnow()
    with db.begin() as session:
        claimed = rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running",
                    attempts=Job.attempts + 1,
                    started_at=now,
                    heartbeat_at=now,
                    progress_epoch=0,
                    metrics=None,
                )
            )
        )
        if not claimed:
            return None
        # A retried job starts its history afresh.
        session.execute(delete(JobMetric).where(JobMetric.job_id == job_id))
        return session.get(Job, job_id)


def _ours(job_id: str, attempt: int) -> Any:
    return (Job.id == job_id, Job.attempts == attempt, Job.status == "running")


class Heartbeat:
    """Refreshes the job's heartbeat from a background thread while it trains."""

    def __init__(self, db: Database, job_id: str, attempt: int, interval: float) -> None:
        self.db, self.job_id, self.attempt, self.interval = db, job_id, attempt, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.db.begin() as session:
                    session.execute(
                        update(Job)
                        .where(*_ours(self.job_id, self.attempt))
                        .values(heartbeat_at=utcnow())
                    )
            except Exception:
                log.exception("job %s: heartbeat failed", self.job_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class EpochRecorder:
    """Writes epoch rows as training goes, batched so writes never dominate short epochs.

    Rows are flushed at the first epoch, then at most every `flush_seconds`, and at the last
    epoch; each flush also refreshes the heartbeat. Every epoch checks for a cancellation
    request (one indexed read), so a cancelled job stops at the next epoch boundary.
    """

    def __init__(
        self, db: Database, job_id: str, attempt: int, epochs: int, flush_seconds: float
    ) -> None:
        self.db = db
        self.job_id = job_id
        self.attempt = attempt
        self.epochs = epochs
        self.flush_seconds = flush_seconds
        self.pending: list[EpochRecord] = []
        self.latest: EpochRecord | None = None
        self._last_flush = -math.inf

    def __call__(self, record: EpochRecord) -> None:
        self.pending.append(record)
        self.latest = record
        now = time.monotonic()
        if record.epoch == self.epochs or now - self._last_flush >= self.flush_seconds:
            self.flush()
        else:
            with self.db.begin() as session:
                state = session.execute(
                    select(Job.cancel_requested).where(*_ours(self.job_id, self.attempt))
                ).first()
            if state is None or state.cancel_requested:
                self.flush(check_cancel=True)

    def flush(self, check_cancel: bool = True) -> None:
        rows = [
            {
                "job_id": self.job_id,
                "epoch": r.epoch,
                "loss": finite_or_none(r.loss),
                "accuracy": finite_or_none(r.accuracy),
                "val_loss": finite_or_none(r.val_loss),
                "val_accuracy": finite_or_none(r.val_accuracy),
                "seconds": r.seconds,
            }
            for r in self.pending
        ]
        with self.db.begin() as session:
            values: dict[str, Any] = {"heartbeat_at": utcnow()}
            if self.latest is not None:
                values["progress_epoch"] = self.latest.epoch
                values["metrics"] = epoch_metrics(self.latest)
            ours = update(Job).where(*_ours(self.job_id, self.attempt)).values(**values)
            if not rowcount(session.execute(ours)):
                raise Superseded(f"job {self.job_id} is no longer attempt {self.attempt}'s")
            if rows:
                session.execute(insert(JobMetric), rows)
            cancel = session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
        self.pending.clear()
        self._last_flush = time.monotonic()
        if check_cancel and cancel:
            epoch = self.latest.epoch if self.latest else 0
            raise JobCancelled(f"cancelled on request after epoch {epoch}")


def epoch_metrics(record: EpochRecord) -> dict[str, float]:
    values = {
        "loss": record.loss,
        "accuracy": record.accuracy,
        "val_loss": record.val_loss,
        "val_accuracy": record.val_accuracy,
    }
    return {k: v for k, raw in values.items() if (v := finite_or_none(raw)) is not None}


def build_artifact(spec: JobSpec, data: PreparedData, result: EngineResult) -> Artifact:
    arrays = {name: np.asarray(a, dtype=np.float32) for name, a in result.arrays.items()}
    if data.scaler_mean is not None and data.scaler_scale is not None:
        arrays["scaler.mean"] = data.scaler_mean.astype(np.float64)
        arrays["scaler.scale"] = data.scaler_scale.astype(np.float64)
    meta = {
        "format": FORMAT_VERSION,
        "engine": spec.engine,
        "task": spec.task,
        "loss": spec.loss,
        "n_features": data.n_features,
        "classes": data.classes,
        "n_targets": int(data.T_fit.shape[1]) if spec.task == "regression" else 1,
        "layers": result.layers,
        "scaler": data.scaler_mean is not None,
    }
    artifact = Artifact(meta, arrays)
    artifact.check()
    return artifact


def model_metadata(spec: JobSpec, artifact: Artifact, metrics: dict[str, float]) -> dict[str, Any]:
    summary = spec.summary()
    total = sum(s.params for s in summary)
    trainable = sum(s.trainable_params for s in summary)
    return {
        "n_features": artifact.meta["n_features"],
        "classes": artifact.meta["classes"],
        "n_targets": artifact.meta["n_targets"],
        "loss": spec.loss,
        "layers": [s.as_dict() for s in summary],
        "params": {"total": total, "trainable": trainable, "non_trainable": total - trainable},
        "metrics": metrics,
    }


def finish(
    db: Database,
    job_id: str,
    attempt: int,
    status: str,
    code: str,
    message: str,
    *,
    started: float | None = None,
) -> None:
    """End this attempt's running job as failed or cancelled, with its reason.

    `started` is the `time.monotonic()` of the claim, to record how long the job ran.
    """
    with db.begin() as session:
        session.execute(
            update(Job)
            .where(*_ours(job_id, attempt))
            .values(
                status=status,
                error_code=code,
                error_message=message,
                finished_at=utcnow(),
                train_seconds=None if started is None else time.monotonic() - started,
            )
        )
    log.info("job %s %s: %s (%s)", job_id, status, code, message)


def finish_succeeded(
    db: Database,
    job: Job,
    spec: JobSpec,
    data: PreparedData,
    result: EngineResult,
    *,
    started: float | None = None,
) -> str | None:
    """Store the model and mark the job succeeded in one transaction."""
    artifact = build_artifact(spec, data, result)
    final = result.history[-1]
    if result.info.get("restored_best_weights") and result.info.get("best_epoch"):
        final = result.history[result.info["best_epoch"] - 1]  # the stored model is this one
    metrics = epoch_metrics(final)
    for name, value in (("test_loss", result.test_loss), ("test_accuracy", result.test_accuracy)):
        if (v := finite_or_none(value)) is not None:
            metrics[name] = v
    model_id = new_id()
    with db.begin() as session:
        done = rowcount(
            session.execute(
                update(Job)
                .where(*_ours(job.id, job.attempts), Job.cancel_requested.is_(False))
                .values(
                    status="succeeded",
                    finished_at=utcnow(),
                    model_id=model_id,
                    metrics=metrics,
                    progress_epoch=result.history[-1].epoch,
                    info=result.info or None,
                    train_seconds=None if started is None else time.monotonic() - started,
                )
            )
        )
        if done:
            session.add(
                Model(
                    id=model_id,
                    tenant_id=job.tenant_id,
                    job_id=job.id,
                    engine=spec.engine,
                    task=spec.task,
                    meta=model_metadata(spec, artifact, metrics),
                    weights=artifact.to_bytes(),
                )
            )
    if not done:
        with db.begin() as session:
            still_ours = session.scalar(select(Job.id).where(*_ours(job.id, job.attempts)))
        if still_ours is None:
            log.warning(
                "job %s: attempt %d was superseded; its model is dropped", job.id, job.attempts
            )
            return None
        # The owner asked to cancel while the last epoch ran: the cancel they were promised wins.
        message = "cancelled on request at the end of training"
        finish(db, job.id, job.attempts, "cancelled", "cancelled", message, started=started)
        return "cancelled"
    log.info("job %s succeeded: model %s, metrics %s", job.id, model_id, metrics)
    return "succeeded"


def run_job(
    db: Database,
    job_id: str,
    *,
    flush_seconds: float = 0.5,
    heartbeat_seconds: float = 5.0,
    timeout_errors: tuple[type[BaseException], ...] = (),
) -> str | None:
    """Train one job to a terminal state; None if it was not ours to run (not queued)."""
    job = claim(db, job_id)
    if job is None:
        log.info("job %s is not queued any more; nothing to do", job_id)
        return None
    attempt = job.attempts
    started = time.monotonic()
    log.info("job %s claimed (attempt %d)", job_id, attempt)
    recorder: EpochRecorder | None = None

    def end(status: str, code: str, message: str) -> str:
        finish(db, job_id, attempt, status, code, message, started=started)
        return status

    with Heartbeat(db, job_id, attempt, heartbeat_seconds):
        try:
            with db.session() as session:
                spec = parse_spec(job.spec, info_lookup(session, job.tenant_id))
                uploaded = uploaded_arrays(session, job.tenant_id, spec)
            recorder = EpochRecorder(db, job_id, attempt, spec.epochs, flush_seconds)
            data = prepare(spec, uploaded)
            result = ENGINES.get(spec.engine)(spec, data, recorder)
            if recorder.pending:
                recorder.flush()
            return finish_succeeded(db, job, spec, data, result, started=started)
        except Superseded:
            log.warning("job %s: attempt %d was superseded; stopping quietly", job_id, attempt)
            return None
        except JobCancelled as exc:
            return end("cancelled", "cancelled", str(exc))
        except SpecError as exc:
            # Accepted once, but its dataset has gone since (or the rules changed).
            problems = "; ".join(f"{d['field']}: {d['message']}" for d in exc.details)
            return end("failed", "invalid_spec", problems)
        except Diverged as exc:
            _save_pending(recorder)
            return end("failed", "diverged", str(exc))
        except timeout_errors:
            _save_pending(recorder)
            return end("failed", "timeout", "the job ran past its time limit")
        except Exception as exc:
            log.exception("job %s failed", job_id)
            return end("failed", "internal_error", f"{type(exc).__name__}: {exc}")


def _save_pending(recorder: EpochRecorder | None) -> None:
    """Keep the epochs a failing job did finish; a failure here must not hide the real one."""
    if recorder is None or not recorder.pending:
        return
    try:
        recorder.flush(check_cancel=False)
    except Superseded:
        pass
    except Exception:
        log.exception("job %s: could not save its last epochs", recorder.job_id)
