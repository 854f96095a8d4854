"""Long CPU work off the event loop: under gevent, in its pool of native threads.

A gevent worker serves all its connections from one thread, and a greenlet is never pre-empted:
a 200 ms plot render would hold every other request of the process (probes, event streams) for
200 ms. Run in a native thread instead, it shares the interpreter the way threads do (the GIL
changes hands every few milliseconds, and NumPy lets go of it), so the loop keeps answering.
Outside gevent (tests, the Flask dev server), the work simply runs where it is called.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def gevent_patched() -> bool:
    """True in a process whose threading gevent has monkey-patched (a gevent gunicorn worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def run(work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`work(*args, **kwargs)`, in a native thread under gevent (the caller's greenlet waits)."""
    if not gevent_patched():
        return work(*args, **kwargs)
    import gevent

    result: R = gevent.get_hub().threadpool.apply(work, args, kwargs)
    return result


# A request body this small (a few rows to predict) is work of microseconds, less than the hop
# to a native thread and back costs; it runs on the loop.
SMALL_BYTES = 16 * 1024


def run_sized(size: int | None, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`work` where it is called when `size` (the request body's bytes) is under SMALL_BYTES,
    else off the event loop as `run` does."""
    if size is not None and size < SMALL_BYTES:
        return work(*args, **kwargs)
    return run(work, *args, **kwargs)


def native_lock() -> Any:
    """A lock of the operating system's, for work that `run` sends to native threads.

    gevent's patched lock belongs to greenlets; native threads must not wait on it.
    """
    if not gevent_patched():
        return threading.Lock()
    from gevent import monkey

    return monkey.get_original("_thread", "allocate_lock")()
