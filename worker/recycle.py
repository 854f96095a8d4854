"""Replace a pool process after it has run WORKER_MAX_KERAS_JOBS_PER_CHILD Keras jobs.

TensorFlow keeps caches that `clear_session()` does not give back (about 6 MiB a Keras job,
measured with benchmarks/memory.py), so a pool process that trains Keras jobs is replaced after a
few of them. A NumPy job leaves nothing behind: its process is kept, since a replacement costs
about a second (the fresh process loads its modules again), which a stream of tiny jobs would
pay every few jobs.

How: after each task, the pool process (billiard) compares its resident memory with
WORKER_MAX_MEMORY_PER_CHILD and, above it, reports the task's result and exits to be replaced.
Once the count is reached, that reading is made to say "above", so the replacement happens at
exactly that point of the loop: after the result is sent, before the next task is taken. It
needs WORKER_MAX_MEMORY_PER_CHILD above 0 (it is by default; Settings.check says so).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

_keras_jobs = 0


def keras_job_ran() -> None:
    """Count a Keras job run in this process."""
    global _keras_jobs
    _keras_jobs += 1


def after_task(max_keras_jobs: int) -> bool:
    """At the end of a task: ask for this process's replacement once it has run
    `max_keras_jobs` Keras jobs (0: never). True if asked."""
    if max_keras_jobs <= 0 or _keras_jobs < max_keras_jobs:
        return False
    import billiard.pool

    log.info("pool process ran %d Keras jobs: it is replaced after this task", _keras_jobs)
    billiard.pool.mem_rss = _over_any_limit
    return True


def _over_any_limit() -> int:
    return sys.maxsize
