"""`make hosts`: every multi-host scenario at full size, one line of figures each.

.venv/bin/python -m tests.hosts [NAME ...]
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.hosts import scenarios
from tests.hosts.cluster import Cluster
from tests.hosts.net import why_unusable

SCENARIOS = {
    "both_hosts": scenarios.both_hosts,
    "worker_host_cut": scenarios.worker_host_cut,
    "data_restarts": scenarios.data_restarts,
    "api_host_cut": scenarios.api_host_cut,
    "lossy_path": scenarios.lossy_path,
    "clock_skew": scenarios.clock_skew,
}


def main(names: list[str]) -> int:
    logging.disable(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so the namespaces and servers are removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    unusable = why_unusable()
    if unusable:
        print(f"skipped: {unusable}")
        return 0
    chosen = names or list(SCENARIOS)
    failed = 0
    with ExitStack() as cleanup:
        cluster = Cluster.start(cleanup)
        for name in chosen:
            if name == "clock_skew" and not scenarios.skew_hook_present():
                print(f"skip {name}: the CLOCK_SKEW_SECONDS hook (branch checkpoints) is not here")
                continue
            with tempfile.TemporaryDirectory() as tmp, ExitStack() as scenario_cleanup:
                try:
                    figures = SCENARIOS[name](cluster, Path(tmp), scenario_cleanup)
                except Exception as exc:
                    failed += 1
                    print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
                    continue
            bad = scenarios.problems(name, figures)
            failed += bool(bad)
            line = json.dumps(figures)
            print(f"FAIL ({', '.join(bad)}) {line}" if bad else f"ok   {line}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
