"""`make reliability`: the failure scenarios at a larger size, one line of figures each.

    .venv/bin/python -m tests.reliability

Uses real processes: Celery workers, the local Redis (and a private redis-server for the
restart scenario), PostgreSQL when it answers (else SQLite).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.integration import harness
from tests.integration.harness import Harness
from tests.support import RedisServer

Scenario = Callable[[Path, ExitStack], dict[str, Any]]


def pool_process_killed(tmp: Path, cleanup: ExitStack) -> dict[str, Any]:
    return harness.pool_process_killed(Harness.start(tmp, cleanup), jobs=10)


def whole_worker_killed(tmp: Path, cleanup: ExitStack) -> dict[str, Any]:
    return harness.whole_worker_killed(Harness.start(tmp, cleanup), jobs=20)


def poison_job(tmp: Path, cleanup: ExitStack) -> dict[str, Any]:
    return harness.poison_job(Harness.start(tmp, cleanup))


def broker_restarted(tmp: Path, cleanup: ExitStack) -> dict[str, Any]:
    server = RedisServer(tmp)
    cleanup.callback(server.stop)
    return harness.broker_restarted(
        Harness.start(tmp, cleanup, broker_url=server.url), server, jobs=20
    )


def run(name: str, scenario: Scenario) -> bool:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as cleanup:
        try:
            figures = scenario(Path(tmp), cleanup)
        except Exception as exc:
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
            return False
    ok = figures["lost"] == 0 and figures["duplicates"] == 0 and figures["5xx"] == 0
    print(f"{'ok  ' if ok else 'FAIL'} " + json.dumps(figures), flush=True)
    return ok


def main() -> int:
    logging.disable(logging.WARNING)
    scenarios: dict[str, Scenario] = {
        "pool process killed": pool_process_killed,
        "whole worker killed": whole_worker_killed,
        "poison job": poison_job,
        "broker restarted": broker_restarted,
    }
    results = [run(name, scenario) for name, scenario in scenarios.items()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
