"""Server-Sent Events for one job: its status, each epoch as it is recorded, until it ends.

The stream polls the database (the source of truth) in short sessions of its own, so a watcher
holds no connection between polls and needs no extra infrastructure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response

from core.db import Database
from core.models import TERMINAL_STATUSES, Job
from core.queries import find
from service.errors import ApiError
from service.jobs import job_history
from service.jsonutil import finite
from service.schemas import JobOut

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = ": keepalive\n\n"


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One event in the text/event-stream format (data is JSON on a single line)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    payload = json.dumps(finite(data), allow_nan=False, separators=(",", ":"))
    return f"{head}data: {payload}\n\n"


def job_events(
    db: Database,
    job_id: str,
    tenant_id: str,
    *,
    after: int = 0,
    poll_seconds: float = POLL_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield the job's events: status first, epochs after `after`, status on each change.

    Ends after the status event of a finished job (or after `max_seconds`, if given, so the
    client reconnects with Last-Event-ID). A retried job starts its history afresh, so a new
    attempt replays its epochs from the first.
    """
    seen: tuple[str, int] | None = None
    last_epoch = after
    started = last_sent = clock()
    while True:
        # The job row is read before its epochs: a job seen finished has all its epochs written.
        with db.begin() as session:
            job = find(session, Job, job_id, tenant_id)
            if job is None:
                return
            state = (job.status, job.attempts)
            if seen is not None and state[1] != seen[1]:
                last_epoch = 0
            epochs = job_history(job, session=session, after=last_epoch)
            status = sse("status", JobOut.from_row(job).dump()) if state != seen else None
        chunks = [sse("epoch", epoch.dump(), epoch.epoch) for epoch in epochs]
        finished = state[0] in TERMINAL_STATUSES
        if status is not None:
            # Status leads on the first poll and on every start; a final status comes last.
            if seen is not None and finished:
                chunks.append(status)
            else:
                chunks.insert(0, status)
        if epochs:
            last_epoch = epochs[-1].epoch
        seen = state
        if chunks:
            yield "".join(chunks)
            last_sent = clock()
        if finished:
            return
        now = clock()
        if max_seconds is not None and now - started >= max_seconds:
            return
        if now - last_sent >= keepalive_seconds:
            yield KEEPALIVE
            last_sent = now
        sleep(poll_seconds)


def resume_after(after: str | None, last_event_id: str | None) -> int:
    """The last epoch the client has seen: `?after=N`, else the Last-Event-ID header, else 0."""
    for field, raw in (("after", after), ("Last-Event-ID", last_event_id)):
        if not raw:
            continue
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            raise ApiError(
                422,
                f"{field} must be an epoch number (a whole number, 0 or more)",
                details=[{"field": field, "message": raw[:100]}],
            )
        return int(raw)
    return 0


def event_stream(events: Iterator[str]) -> Response:
    """A streaming text/event-stream response that no proxy buffers or caches."""
    return Response(
        events,
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
