"""What each part of a one-row prediction costs over the web stack: the API served whole and with
one part taken out at a time, beside the bare Flask route, all under the same gunicorn setup.

    .venv/bin/python -m benchmarks.predict_breakdown

A profiling aid, not a target: the variants below are the real app with one piece replaced by
a stand-in (monkeypatched in the gunicorn worker), so what a variant saves is what that piece
costs on the hot path. One client sends one-row requests to every server in turn, in blocks of
50 (as predict_http's side-by-side figures do), so the machine's drift touches all alike.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask, g

from benchmarks.predict_http import BLOCK, ROW, one_request, post_bytes, request_bytes
from benchmarks.stack import prepare_database, start_gunicorn, stop, train_model

# The seed network's answer to ROW, as the route gives it (the constant-answer variant's).
CONSTANT = {"predictions": [2], "probabilities": [[0.09, 0.36, 0.55]]}


def variant(name: str) -> Flask:
    """The API with the part `name` taken out (a gunicorn app factory: 'variant("...")')."""
    from service.api import common, metrics, models
    from service.app import create_app
    from service.params import check_request

    if name == "constant answer":  # parsing the body's rows, the network, the answer
        models._predict = lambda predictor, body, max_rows: CONSTANT
    elif name == "no authentication":  # the key, the rate limit, the failed-auth check

        def tenant() -> str:
            g.tenant_id = "bench"
            return "bench"

        common.tenant = models.tenant = tenant
    elif name == "no metrics":  # the latency histogram and the request counter

        class Unobserved:
            def observe(self, _value: float) -> None:
                pass

        models.PREDICT_SECONDS = Unobserved()  # type: ignore[assignment]
    elif name == "Flask's jsonify":  # the answer through Flask's JSON provider
        models.json_answer = models.jsonify
    app = create_app()
    if name == "no metrics":
        app.after_request_funcs[None].remove(metrics.count_request)
    elif name == "no path checks":  # the path ids read through their checks
        app.before_request_funcs[None].remove(check_request)
    return app


VARIANTS = (
    "constant answer",
    "no authentication",
    "no metrics",
    "no path checks",
    "Flask's jsonify",
)


def main() -> None:
    turns = 20 if "--quick" in sys.argv else 100
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url, db = prepare_database(tmp)
        model_id = train_model(db, "numpy")
        env = {"RATE_LIMIT_PER_MINUTE": "100000000", "BROKER_URL": f"filesystem://{tmp / 'b'}"}
        apps: dict[str, str | None] = {
            "bare flask": "benchmarks.bare_app:create_app()",
            "our API": None,
            **{name: f'benchmarks.predict_breakdown:variant("{name}")' for name in VARIANTS},
        }
        servers: dict[str, Any] = {}
        try:
            for label, app in apps.items():
                servers[label] = start_gunicorn(url, tmp, 2, app, **env)
            payloads = {
                label: (
                    port,
                    post_bytes(port, "/echo", {"instances": [ROW]})
                    if label == "bare flask"
                    else request_bytes(port, model_id),
                )
                for label, (_, port) in servers.items()
            }
            for port, payload in payloads.values():
                for _ in range(100):  # warm every worker
                    one_request(port, payload)
            latencies: dict[str, list[float]] = {label: [] for label in payloads}
            for _ in range(turns):
                for label, (port, payload) in payloads.items():
                    latencies[label] += [one_request(port, payload) for _ in range(BLOCK)]
        finally:
            for proc, _ in servers.values():
                stop(proc)
    p50 = {label: statistics.median(values) * 1e6 for label, values in latencies.items()}
    print(f"{'server (one-row predict)':<26}{'p50 µs':>9}{'/ bare':>9}{'saves µs':>10}")
    for label, value in p50.items():
        saves = f"{p50['our API'] - value:.0f}" if label in VARIANTS else ""
        print(f"{label:<26}{value:>9.0f}{value / p50['bare flask']:>8.2f}x{saves:>10}")


if __name__ == "__main__":
    main()
