"""Checkpoints of a running job: written every CHECKPOINT_SECONDS with the epochs before them,
read back when a retried attempt claims the job, deleted when the job ends.

Arrays are stored as `.npz` (read with allow_pickle=False), the rest as plain JSON; a checkpoint
larger than any model this service makes is neither written nor read.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
import zipfile
from typing import Any

import numpy as np
from sqlalchemy import delete
from sqlalchemy.orm import Session

from core.artifact import MAX_ARTIFACT_BYTES
from core.db import db_now
from core.models import JobCheckpoint
from worker.engines.base import Snapshot

log = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = MAX_ARTIFACT_BYTES


class HandedBack(Exception):
    """The worker is shutting down: the job was checkpointed and goes back to the queue."""


class CheckpointError(ValueError):
    """A stored checkpoint that cannot be used (damaged, too large, another engine's)."""


def to_bytes(snapshot: Snapshot) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **snapshot.arrays)
    return buffer.getvalue()


def from_row(row: JobCheckpoint, engine: str) -> Snapshot:
    """The snapshot a stored row holds; CheckpointError if it cannot be used by `engine`."""
    if len(row.arrays) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError("the checkpoint is larger than any this service writes")
    if not isinstance(row.state, dict) or row.state.get("engine") != engine:
        raise CheckpointError(f"the checkpoint is not the {engine} engine's")
    try:
        with np.load(io.BytesIO(row.arrays), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise CheckpointError(f"the checkpoint cannot be read: {exc}") from None
    return Snapshot(int(row.epoch), arrays, row.state)


def store(session: Session, job_id: str, attempt: int, snapshot: Snapshot, blob: bytes) -> None:
    """Replace the job's checkpoint (inside the caller's fenced transaction)."""
    session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
    session.add(
        JobCheckpoint(
            job_id=job_id,
            attempt=attempt,
            epoch=snapshot.epoch,
            state=snapshot.state,
            arrays=blob,
            created_at=db_now(),
        )
    )


def discard(session: Session, job_id: str) -> None:
    """The job ended: its checkpoint goes."""
    session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id))


class Checkpointer:
    """Says a checkpoint is due every `every` seconds of training (0: every epoch; negative:
    never), and hands each snapshot to `write` (the epoch recorder's fenced flush).

    Once `handback` is set (the worker is shutting down), one is due at once, and storing it
    raises HandedBack: the job stops there and goes back to the queue.
    """

    def __init__(self, every: float, write: Any, handback: threading.Event | None = None) -> None:
        self.every = math.inf if every < 0 else every
        self.write = write
        self.handback = handback or threading.Event()
        self.last = time.monotonic()
        self.saved = 0
        self.seconds = 0.0  # spent writing checkpoints

    def due(self) -> bool:
        return self.handback.is_set() or time.monotonic() - self.last >= self.every

    def save(self, snapshot: Snapshot) -> None:
        began = time.monotonic()
        blob = to_bytes(snapshot)
        if len(blob) > MAX_CHECKPOINT_BYTES:
            log.warning("checkpoint of %d bytes is over the limit; no more checkpoints", len(blob))
            self.every = math.inf
            return
        self.write(snapshot, blob)
        self.saved += 1
        self.last = time.monotonic()
        self.seconds += self.last - began
        if self.handback.is_set():
            raise HandedBack(f"checkpointed after epoch {snapshot.epoch}; its worker is stopping")
