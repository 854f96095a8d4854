"""A job's life on a worker: claim it, train it, record every epoch, end it with a reason.

Plain functions over the database; the Celery task is a thin wrapper around `run_job`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from core.artifact import FORMAT_VERSION, Artifact
from core.cost import job_cost
from core.datasets import PreparedData, prepare, uploaded_arrays
from core.db import Database, connection_lost, db_now, rowcount
from core.dispatch import record_speed
from core.evaluation import evaluate
from core.models import Job, JobCheckpoint, JobMetric, Model, new_id
from core.registry import Registry
from core.runtime import Predictor
from core.spec import JobSpec, SpecError, parse_spec
from core.uploads import info_lookup
from core.warmstart import model_lookup
from worker import checkpoints, recycle
from worker.checkpoints import Checkpointer, CheckpointError, HandedBack
from worker.engines.base import (
    Check,
    Diverged,
    EngineResult,
    EpochCallback,
    EpochRecord,
    Snapshot,
    Start,
    finite_or_none,
)
from worker.sweeps import Pruned, TrialPruner

log = logging.getLogger(__name__)

MIN_MEASURED_SECONDS = 0.2

Engine = Callable[[JobSpec, PreparedData, EpochCallback, Check, Start], EngineResult]


def _numpy_engine(
    spec: JobSpec, data: PreparedData, cb: EpochCallback, check: Check, start: Start
) -> EngineResult:
    from worker.engines.numpy_engine.training import train

    return train(spec, data, cb, check, start)


def _keras_engine(
    spec: JobSpec, data: PreparedData, cb: EpochCallback, check: Check, start: Start
) -> EngineResult:
    from worker.engines.keras_engine import train  # imports TensorFlow: only inside the task

    recycle.keras_job_ran()  # TensorFlow is in this process now (worker/recycle.py)
    return train(spec, data, cb, check, start)


ENGINES: Registry[Engine] = Registry("engine", {"numpy": _numpy_engine, "keras": _keras_engine})


class JobCancelled(Exception):
    """The job's owner asked for it to stop."""


class Superseded(Exception):
    """The job was given to another attempt (this worker was presumed dead): stop, write nothing."""


def claim(
    db: Database, job_id: str, worker: str | None = None
) -> tuple[Job, Snapshot | None] | None:
    """Move a queued job to running (attempts + 1); None if it is not queued any more.

    The attempt number is the fencing token: every later write of this run is conditional on
    it, so a run that was presumed dead and replaced cannot overwrite its successor's work.
    A job with a checkpoint resumes from it: the epoch rows up to it stay, later ones (written
    by the lost attempt after its last checkpoint) go. Without one, the history starts afresh.
    Every timestamp is the database server's.
    """
    with db.begin() as session:
        claimed = rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running",
                    attempts=Job.attempts + 1,
                    started_at=db_now(),
                    heartbeat_at=db_now(),
                    worker=worker,
                    handback_requested=False,
                )
                # No ORM objects to bring up to date in this session: skipping the evaluation of
                # the WHERE clause against them saves ~2 ms a statement (as below and in
                # EpochRecorder.flush, finish, finish_succeeded: every job runs each).
                .execution_options(synchronize_session=False)
            )
        )
        if not claimed:
            return None
        job = session.get(Job, job_id)
        assert job is not None
        snapshot = _resumable(session, job)
        kept = 0 if snapshot is None else snapshot.epoch
        session.execute(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.epoch > kept))
        last = session.get(JobMetric, (job_id, kept)) if kept else None
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                progress_epoch=kept,
                metrics=None if last is None else epoch_metrics(_record(last)),
                resumed_from_epoch=kept or None,
            )
            .execution_options(synchronize_session=False)  # refreshed just below
        )
        session.refresh(job)
        return job, snapshot


def _resumable(session: Session, job: Job) -> Snapshot | None:
    """The job's checkpoint, if it has one this attempt can use (a bad one is dropped)."""
    row = session.get(JobCheckpoint, job.id)
    if row is None:
        return None
    try:
        return checkpoints.from_row(row, job.engine)
    except CheckpointError as exc:
        log.warning("job %s: checkpoint not used (%s); starting afresh", job.id, exc)
        checkpoints.discard(session, job.id)
        return None


def _record(row: JobMetric) -> EpochRecord:
    return EpochRecord(
        epoch=row.epoch,
        loss=math.nan if row.loss is None else row.loss,
        accuracy=row.accuracy,
        val_loss=row.val_loss,
        val_accuracy=row.val_accuracy,
        seconds=row.seconds,
    )


def recorded_history(db: Database, job_id: str, up_to: int) -> list[EpochRecord]:
    """The job's stored epochs 1..up_to, as the engine reported them."""
    with db.session() as session:
        rows = session.scalars(
            select(JobMetric)
            .where(JobMetric.job_id == job_id, JobMetric.epoch <= up_to)
            .order_by(JobMetric.epoch)
        )
        return [_record(row) for row in rows]


def _ours(job_id: str, attempt: int) -> Any:
    return (Job.id == job_id, Job.attempts == attempt, Job.status == "running")


class Heartbeat:
    """While the job trains, a background thread refreshes its heartbeat every `interval`
    seconds and looks for a cancellation request every `cancel_poll` seconds.

    `check()`, which the engines call between batches, raises JobCancelled once one was seen:
    a cancel is honoured within about a second however long an epoch takes.
    """

    def __init__(
        self, db: Database, job_id: str, attempt: int, interval: float, cancel_poll: float = 1.0
    ) -> None:
        self.db, self.job_id, self.attempt, self.interval = db, job_id, attempt, interval
        self.cancel_poll = min(cancel_poll, interval)
        self.cancelled = threading.Event()
        self.handback = threading.Event()  # the worker is shutting down
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._stop.wait(self.cancel_poll):
            try:
                if time.monotonic() - last_beat >= self.interval:
                    last_beat = time.monotonic()
                    with self.db.begin() as session:
                        session.execute(
                            update(Job)
                            .where(*_ours(self.job_id, self.attempt))
                            .values(heartbeat_at=db_now())
                        )
                with self.db.begin() as session:
                    flags = session.execute(
                        select(Job.cancel_requested, Job.handback_requested).where(
                            Job.id == self.job_id
                        )
                    ).first()
                if flags is not None and flags.cancel_requested:
                    self.cancelled.set()
                if flags is not None and flags.handback_requested:
                    self.handback.set()
            except Exception:
                log.exception("job %s: heartbeat failed", self.job_id)

    def check(self) -> None:
        """Raise JobCancelled if the job's owner asked it to stop."""
        if self.cancelled.is_set():
            raise JobCancelled("cancelled on request during an epoch")

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
        self,
        db: Database,
        job_id: str,
        attempt: int,
        epochs: int,
        flush_seconds: float,
        pruner: TrialPruner | None = None,
    ) -> None:
        self.db = db
        self.pruner = pruner
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
        if self.pruner is not None:  # a sweep's trial: its pruner may stop it after this epoch
            self.pruner(record.epoch, finite_or_none(getattr(record, self.pruner.metric, None)))

    def checkpoint(self, snapshot: Snapshot, blob: bytes) -> None:
        """Store a checkpoint together with the epochs up to it, in one fenced transaction."""
        self.flush(check_cancel=False, checkpoint=(snapshot, blob))

    def flush(
        self, check_cancel: bool = True, checkpoint: tuple[Snapshot, bytes] | None = None
    ) -> None:
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
            values: dict[str, Any] = {"heartbeat_at": db_now()}
            if self.latest is not None:
                values["progress_epoch"] = self.latest.epoch
                values["metrics"] = epoch_metrics(self.latest)
            ours = (
                update(Job)
                .where(*_ours(self.job_id, self.attempt))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if not rowcount(session.execute(ours)):
                raise Superseded(f"job {self.job_id} is no longer attempt {self.attempt}'s")
            if rows:
                session.execute(insert(JobMetric), rows)
            if checkpoint is not None:
                checkpoints.store(session, self.job_id, self.attempt, *checkpoint)
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
    return {
        "n_features": artifact.meta["n_features"],
        "classes": artifact.meta["classes"],
        "n_targets": artifact.meta["n_targets"],
        "loss": spec.loss,
        "layers": [s.as_dict() for s in spec.summary()],
        "params": asdict(spec.param_counts()),
        "metrics": metrics,
    }


def evaluation_of(spec: JobSpec, artifact: Artifact, data: PreparedData) -> dict[str, Any]:
    """The stored model judged on the test split, through the runtime that serves it."""
    predictor = Predictor(artifact)
    return evaluate(predictor, data.X_test, data.T_test, spec.loss, scaled=True)


def finish(
    db: Database,
    job_id: str,
    attempt: int,
    status: str,
    code: str,
    message: str,
    *,
    started: float | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """End this attempt's running job as failed or cancelled, with its reason.

    `started` is the `time.monotonic()` of the claim, to record how long the job ran; `info`
    says more (a pruned trial: the epoch and rule that stopped it).
    """
    values: dict[str, Any] = {} if info is None else {"info": info}
    with db.begin() as session:
        ended = session.execute(
            update(Job)
            .where(*_ours(job_id, attempt))
            .values(
                status=status,
                error_code=code,
                error_message=message,
                finished_at=db_now(),
                train_seconds=None if started is None else time.monotonic() - started,
                **values,
            )
            .execution_options(synchronize_session=False)
        )
        if rowcount(ended):
            checkpoints.discard(session, job_id)
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
    evaluation = evaluation_of(spec, artifact, data)
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
                    finished_at=db_now(),
                    model_id=model_id,
                    metrics=metrics,
                    progress_epoch=result.history[-1].epoch,
                    info=result.info or None,
                    train_seconds=None if started is None else time.monotonic() - started,
                )
                .execution_options(synchronize_session=False)
            )
        )
        if done:
            checkpoints.discard(session, job.id)
            session.add(
                Model(
                    id=model_id,
                    tenant_id=job.tenant_id,
                    job_id=job.id,
                    engine=spec.engine,
                    task=spec.task,
                    meta=model_metadata(spec, artifact, metrics),
                    weights=artifact.to_bytes(),
                    created_at=db_now(),
                    evaluation=evaluation,
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
    checkpoint_seconds: float = 30.0,
    timeout_errors: tuple[type[BaseException], ...] = (),
    worker_name: str | None = None,
) -> str | None:
    """Train one job to a terminal state; None if it was not ours to run (not queued).

    `worker_name` (the Celery node) is recorded on the job with this process's id (what a
    lost job's message names, and how the worker's main process knows its pool process's job),
    and records the training speed this job measured. A checkpoint is stored every
    `checkpoint_seconds` of training (0: every epoch; negative: never).
    """
    claimed = claim(db, job_id, running_on(worker_name))
    if claimed is None:
        log.info("job %s is not queued any more; nothing to do", job_id)
        return None
    job, snapshot = claimed
    attempt = job.attempts
    started = time.monotonic()
    if snapshot is None:
        log.info("job %s claimed (attempt %d)", job_id, attempt)
    else:
        log.info(
            "job %s claimed (attempt %d), resuming after epoch %d", job_id, attempt, snapshot.epoch
        )
    recorder: EpochRecorder | None = None

    def end(status: str, code: str, message: str, info: dict[str, Any] | None = None) -> str:
        finish(db, job_id, attempt, status, code, message, started=started, info=info)
        return status

    with Heartbeat(db, job_id, attempt, heartbeat_seconds) as heartbeat:
        try:
            with db.session() as session:
                lookups = (
                    info_lookup(session, job.tenant_id),
                    model_lookup(session, job.tenant_id),
                )
                spec = parse_spec(job.spec, *lookups)
                uploaded = uploaded_arrays(session, job.tenant_id, spec)
                init = initial_arrays(session, job.tenant_id, spec)
            pruner = TrialPruner.for_job(db, job)  # a sweep's trial with a pruner
            recorder = EpochRecorder(db, job_id, attempt, spec.epochs, flush_seconds, pruner)
            start = Start(
                resume=snapshot,
                history=[] if snapshot is None else recorded_history(db, job_id, snapshot.epoch),
                init=init,
                checkpoints=Checkpointer(
                    checkpoint_seconds, recorder.checkpoint, heartbeat.handback
                ),
            )
            data = prepare(spec, uploaded)
            result = ENGINES.get(spec.engine)(spec, data, recorder, heartbeat.check, start)
            if recorder.pending:
                recorder.flush()
            status = finish_succeeded(db, job, spec, data, result, started=started)
            if worker_name is not None:
                _record_speed(db, worker_name, spec, result, start.first_epoch)
            return status
        except Superseded:
            log.warning("job %s: attempt %d was superseded; stopping quietly", job_id, attempt)
            return None
        except HandedBack as exc:
            return requeue(db, job_id, attempt, str(exc))
        except JobCancelled as exc:
            _save_pending(recorder)  # the epochs finished before a cancel seen mid-epoch
            return end("cancelled", "cancelled", str(exc))
        except Pruned as exc:
            _save_pending(recorder)
            return end("cancelled", "pruned", str(exc), exc.info())
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
            if connection_lost(exc):
                # The database went away mid-run (restarted, the network cut): no ending can be
                # written now. The job's heartbeat stops, and a reaper queues it again (another
                # attempt) once it is stale; this attempt's writes are fenced off from then on.
                log.warning(
                    "job %s: lost the database during attempt %d (%s); leaving it to the reaper",
                    job_id,
                    attempt,
                    exc,
                )
                return None
            log.exception("job %s failed", job_id)
            return end("failed", "internal_error", f"{type(exc).__name__}: {exc}")


def _record_speed(
    db: Database, worker_name: str, spec: JobSpec, result: EngineResult, first_epoch: int = 1
) -> None:
    """Fold the FLOP/s this job trained at into the worker's measured speed (cost estimates)."""
    trained = [record for record in result.history if record.epoch >= first_epoch]
    seconds = sum(record.seconds for record in trained)
    if seconds < MIN_MEASURED_SECONDS:
        return  # too short to say anything but the overhead
    per_epoch = job_cost(spec).flops_per_epoch
    try:
        record_speed(db, worker_name, spec.engine, per_epoch * len(trained) / seconds)
    except Exception:
        log.exception("job: could not record the worker's speed")


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


def running_on(worker_name: str | None, pid: int | None = None) -> str | None:
    """How a job records the pool process running it: "<Celery node> pid <N>"."""
    if worker_name is None:
        return None
    return f"{worker_name} pid {os.getpid() if pid is None else pid}"


def initial_arrays(session: Session, tenant_id: str, spec: JobSpec) -> dict[str, Any] | None:
    """Warm start: the weights of the finished model the spec starts from (None: no `init`)."""
    if spec.init is None:
        return None
    row = session.scalar(
        select(Model.weights).where(Model.id == spec.init.model_id, Model.tenant_id == tenant_id)
    )
    if row is None:  # deleted since the job was accepted
        raise SpecError(
            [{"field": "init.model_id", "message": f"no model with id {spec.init.model_id!r}"}]
        )
    return Artifact.from_bytes(row).arrays


def requeue(db: Database, job_id: str, attempt: int, reason: str) -> str | None:
    """Give this attempt's job back to the queue (its checkpoint stays); the dispatcher sends
    it to a worker with a free slot. None if it was not this attempt's any more."""
    with db.begin() as session:
        back = session.execute(
            update(Job)
            .where(*_ours(job_id, attempt))
            .values(status="queued", enqueued_at=None, handback_requested=False)
        )
    if not rowcount(back):
        return None
    log.info("job %s: %s; queued again", job_id, reason)
    return "queued"


def request_handback(db: Database, worker_name: str) -> int:
    """This worker (Celery node) is shutting down: ask each job its pool processes run to
    checkpoint at its next epoch's end and go back to the queue. Returns how many were asked."""
    with db.begin() as session:
        return rowcount(
            session.execute(
                update(Job)
                .where(Job.status == "running", Job.worker.startswith(f"{worker_name} pid "))
                .values(handback_requested=True)
            )
        )


def hand_back(db: Database, job_id: str, worker: str, reason: str, max_attempts: int) -> str | None:
    """The pool process `worker` died running the job (seen at once by the worker's main
    process): queue the job again (a retry resumes from its checkpoint), or fail it once it
    has used MAX_ATTEMPTS. Fenced on the process, so a job it no longer ran is left alone.
    Returns the new status, or None if the job was not that process's."""
    ours = (Job.id == job_id, Job.status == "running", Job.worker == worker)
    with db.begin() as session:
        if rowcount(
            session.execute(
                update(Job)
                .where(*ours, Job.attempts < max_attempts, Job.cancel_requested.is_(False))
                .values(status="queued", enqueued_at=db_now())
            )
        ):
            log.warning("job %s: %s died (%s); queued again", job_id, worker, reason)
            return "queued"
        cancelled = session.execute(
            update(Job)
            .where(*ours, Job.cancel_requested.is_(True))
            .values(
                status="cancelled",
                error_code="cancelled",
                error_message="cancelled on request; its worker had stopped",
                finished_at=db_now(),
            )
        )
        if rowcount(cancelled):
            checkpoints.discard(session, job_id)
            return "cancelled"
        attempts = session.scalar(select(Job.attempts).where(*ours))
        if attempts is None:
            return None
        message = (
            f"the pool process running this job died during each of its {attempts} attempts "
            f"(MAX_ATTEMPTS={max_attempts}); the last one, {worker}: {reason}. A process killed "
            "by signal 9 is most often out of memory: try a smaller batch or network"
        )
        session.execute(
            update(Job)
            .where(*ours)
            .values(
                status="failed",
                error_code="worker_lost",
                error_message=message,
                finished_at=db_now(),
            )
        )
        checkpoints.discard(session, job_id)
    log.warning("job %s: %s", job_id, message)
    return "failed"
