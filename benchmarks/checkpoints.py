"""What checkpoints cost: the large job trained through the worker's own code (`run_job`, with
its database writes) without checkpoints and with them at the default interval, side by side.

    .venv/bin/python -m benchmarks.checkpoints [--epochs 5] [--interval 30] [--postgres URL]

Prints both runs' training time, the checkpoints written and the time spent writing them; the
target is checkpoints <= 5 % of training time at the default CHECKPOINT_SECONDS.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from benchmarks.common import print_table
from benchmarks.large_job import SPEC
from benchmarks.stack import prepare_database
from core.db import Database
from core.models import Job
from core.settings import Settings
from core.spec import parse_spec
from service.jobs import create_job
from worker import jobs
from worker.checkpoints import Checkpointer

DEFAULT_INTERVAL = Settings().checkpoint_seconds


class Counted(Checkpointer):
    """The worker's checkpointer, keeping a hand on every instance to read its figures."""

    made: list[Counted] = []  # noqa: RUF012 - a benchmark's tally

    def __init__(self, every: float, write: Any, handback: Any = None) -> None:
        super().__init__(every, write, handback)
        Counted.made.append(self)


def run(db: Database, epochs: int, interval: float) -> tuple[float, int, float]:
    """Train the large job once; returns (training seconds, checkpoints, seconds writing them)."""
    spec = parse_spec({**SPEC, "engine": "numpy", "epochs": epochs})
    with db.begin() as session:
        job_id = create_job(spec, session=session, tenant_id="bench").id
    Counted.made.clear()
    started = time.perf_counter()
    assert jobs.run_job(db, job_id, checkpoint_seconds=interval) == "succeeded"
    wall = time.perf_counter() - started
    with db.begin() as session:
        trained = session.scalar(select(Job.train_seconds).where(Job.id == job_id))
    (counted,) = Counted.made
    return float(trained or wall), counted.saved, counted.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=SPEC["epochs"])
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    args = parser.parse_args()
    jobs.Checkpointer = Counted  # type: ignore[misc]
    with tempfile.TemporaryDirectory() as tmp:
        _, db = prepare_database(Path(tmp))
        plain, _, _ = run(db, args.epochs, -1)
        with_cp, saved, writing = run(db, args.epochs, args.interval)
        db.dispose()
    share = writing / with_cp
    print(f"large job, {args.epochs} epochs, NumPy engine, SQLite, through run_job")
    # Wall times on a busy machine vary more than checkpoints cost: the time spent writing them
    # is the figure that says what they cost.
    print(f"without checkpoints: {plain:.1f} s")
    print(
        f"with checkpoints every {args.interval:g} s: {with_cp:.1f} s, {saved} written, "
        f"{writing:.3f} s writing them ({writing / max(saved, 1) * 1000:.0f} ms each)"
    )
    print_table(
        [
            (
                "checkpoint time / training",
                f"{share:.2%}",
                "<= 5%",
                share <= 0.05 and saved > 0,
            ),
        ]
    )


if __name__ == "__main__":
    main()
