"""The process's own wall clock, read in one place.

Nothing that decides a job's fate reads it: heartbeats, staleness, dispatch and the timestamps
a worker writes all come from the database server's clock (`core.db.db_now`). What still reads
the local clock (new ids' time prefix, a few API-side timestamps) goes through `wall_time`, so a
test can shift it with `CLOCK_SKEW_SECONDS` (a test-only setting: a worker whose clock runs
ahead or behind must change nothing).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

_skew = 0.0


def set_skew(seconds: float) -> None:
    """Shift this process's wall clock by `seconds` (CLOCK_SKEW_SECONDS; tests only)."""
    global _skew
    _skew = float(seconds)


def wall_time() -> float:
    """Seconds since the epoch, by this process's (possibly shifted) clock."""
    return time.time() + _skew


def utcnow() -> datetime:
    """This process's wall clock as an aware UTC datetime."""
    return datetime.fromtimestamp(wall_time(), UTC)
