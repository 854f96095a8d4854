"""Server-Sent Events for one job: its status, each epoch as it is recorded, until it ends.

An open stream must cost almost nothing: a browser tab or a `trainsvc wait` may keep one open
for hours, and a tenant may open hundreds. Three things make that so:

- The API runs under gunicorn's gevent workers (`service/gunicorn_conf.py`): a waiting stream
  is a parked greenlet (a few KiB), not one of a handful of request threads, so streams never
  hold back `/healthz` or another tenant's requests. psycopg (3.1.14 and later) and redis-py
  yield to other greenlets while they wait. We chose gevent over an async server because the
  Flask views stay exactly as they are; what would still hold a process's one event loop
  (plots, predictions, CSV parsing) runs in native threads (`service/offload.py`).
- One `Hub` per API process (`service/hub.py`) reads every job its streams watch in one round:
  two queries per `EVENTS_POLL_SECONDS` (a third only when a state changed) whether 1 or 500
  streams watch 1 or 500 jobs, instead of a polling loop per stream. Each event is rendered
  once per process, and only the streams whose job changed are woken.
- Opening a stream costs no query of its own: the view asks the hub to admit it, and the next
  round (within 50 ms) finds the job (404 if the tenant has none by that id) and takes one of
  the tenant's `EVENTS_MAX_PER_TENANT` slots (429 past it; `service/streamcap.py`) for every
  stream that asked meanwhile, in one Redis transaction. A crowd of reconnecting clients costs
  a few rounds, not a query and a Redis call each.

The database stays the source of truth (workers publish nothing else), and a waiting stream
holds no database connection. Each stream ends after `EVENTS_MAX_SECONDS` (the client resumes
with Last-Event-ID), and sends `: keepalive` after `EVENTS_HEARTBEAT_SECONDS` of silence, so a
dead client is noticed at the next write and its slot is freed. Without a hub (unit tests), a
stream polls a feed of its own.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator

from flask import Response

from core.db import Database
from core.models import TERMINAL_STATUSES, Job
from core.queries import NotFound
from service.errors import ApiError
from service.hub import POLL_SECONDS, Feed, Hub, Ticket, Watched
from service.params import epoch
from service.sse import KEEPALIVE
from service.streamcap import RETRY_AFTER_SECONDS

KEEPALIVE_SECONDS = 15.0


class Cursor:
    """What one stream has sent: the last state and epoch; `take` gives what it has not."""

    def __init__(self, after: int) -> None:
        self.seen: tuple[str, int] | None = None
        self.last_epoch = after

    def take(self, entry: Watched) -> tuple[str, bool]:
        """The events to send now (maybe none) and whether the job has finished."""
        state = entry.state
        if state is None:
            return "", False
        if self.seen is not None and state[1] != self.seen[1]:
            self.last_epoch = 0  # a new attempt replays its epochs from the first
        start = bisect.bisect_right(entry.epochs, self.last_epoch)
        chunks = entry.events[start:]
        if chunks:
            self.last_epoch = entry.epochs[-1]
        finished = state[0] in TERMINAL_STATUSES
        if state != self.seen:
            # Status leads on the first read and on every start; a final status comes last.
            if self.seen is not None and finished:
                chunks.append(entry.status)
            else:
                chunks.insert(0, entry.status)
        self.seen = state
        return "".join(chunks), finished


def job_events(
    db: Database,
    job_id: str,
    tenant_id: str,
    *,
    after: int = 0,
    hub: Hub | None = None,
    ticket: Ticket | None = None,
    poll_seconds: float = POLL_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield the job's events: status first, epochs after `after`, status on each change.

    Ends after the status event of a finished job (or after `max_seconds`, if given, so the
    client reconnects with Last-Event-ID). A retried job starts its history afresh, so a new
    attempt replays its epochs from the first. With a hub and the ticket it admitted, the
    stream waits for the hub's rounds; without, it polls a feed of its own every `poll_seconds`.
    """
    advance, done, entry = _source(db, job_id, tenant_id, hub, ticket, poll_seconds, sleep)
    try:
        cursor = Cursor(after)
        started = last_sent = clock()
        while True:
            until = last_sent + keepalive_seconds
            if max_seconds is not None:
                until = min(until, started + max_seconds)
            advance(until - clock())
            if entry.gone:
                return
            with entry.changed:  # the feed's lock: a round may be updating the entry
                text, finished = cursor.take(entry)
            if text:
                yield text
                last_sent = clock()
            if finished:
                return
            now = clock()
            if max_seconds is not None and now - started >= max_seconds:
                return
            if now - last_sent >= keepalive_seconds:
                yield KEEPALIVE
                last_sent = now
    finally:
        done()


def _source(
    db: Database,
    job_id: str,
    tenant_id: str,
    hub: Hub | None,
    ticket: Ticket | None,
    poll_seconds: float,
    sleep: Callable[[float], None],
) -> tuple[Callable[[float], None], Callable[[], None], Watched]:
    """How a stream waits for news of its job (at most the given seconds), and how it ends."""
    if hub is not None and ticket is not None:
        shared, admitted = hub, ticket
        version = admitted.version

        def wait(timeout: float) -> None:
            nonlocal version
            version = shared.wait(admitted.entry, version, timeout)

        return wait, lambda: shared.close(admitted), admitted.entry
    feed = Feed(db)
    entry, _ = feed.join(job_id, tenant_id)
    polled = False

    def poll(_timeout: float) -> None:
        nonlocal polled
        if polled:
            sleep(poll_seconds)
        feed.poll()
        polled = True

    return poll, lambda: feed.leave(entry), entry


def resume_after(after: str | None, last_event_id: str | None) -> int:
    """The last epoch the client has seen: `?after=N`, else the Last-Event-ID header, else 0."""
    for field, raw in (("after", after), ("Last-Event-ID", last_event_id)):
        if raw:
            return epoch(field, raw)
    return 0


def stream_refused(*, full: bool) -> ApiError:
    """No event stream now: 429 when the tenant has all its streams open (`full`), else 503."""
    return ApiError(
        429 if full else 503,
        "this tenant has as many event streams open as it may (EVENTS_MAX_PER_TENANT); "
        "close one or try again later"
        if full
        else "the job's events cannot be read now; try again shortly",
        code="too_many_streams" if full else "unavailable",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def stream_response(
    hub: Hub,
    job_id: str,
    tenant_id: str,
    *,
    resume: tuple[str | None, str | None],
    max_seconds: float | None,
    keepalive_seconds: float,
) -> Response:
    """The tenant's job's event stream, holding one of the tenant's slots while it is open.

    404 for a job the tenant does not have, 422 for a bad `resume` (`?after=`, Last-Event-ID),
    429 when the tenant's slots are all in use, 503 if the hub cannot read the database now.
    """
    ticket = hub.admit(job_id, tenant_id)
    if ticket.answer == "gone":
        raise NotFound.of(Job, job_id)
    if ticket.answer in ("full", "unavailable"):
        raise stream_refused(full=ticket.answer == "full")
    try:
        after = resume_after(*resume)
    except ApiError:
        hub.close(ticket)
        raise
    events = job_events(
        hub.db,
        job_id,
        tenant_id,
        after=after,
        hub=hub,
        ticket=ticket,
        keepalive_seconds=keepalive_seconds,
        max_seconds=max_seconds,
    )
    response = event_stream(events)
    # Also when the body is never read: a generator's clean-up runs only once it has started.
    response.call_on_close(lambda: hub.close(ticket))
    return response


def event_stream(events: Iterator[str]) -> Response:
    """A streaming text/event-stream response that no proxy buffers or caches."""
    return Response(
        events,
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
