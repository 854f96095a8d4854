"""Take docs/dashboard.png and docs/sweep-dashboard.png, in headless Chromium.

`python -m tests.e2e.screenshot [path [sweep_path]]` starts its own stack (SQLite, a worker,
gunicorn) in a scratch directory, submits examples/seed_job.json from the dashboard's form,
waits for it to finish, runs one prediction and saves a full-page screenshot of the job page;
then presses Compare optimizers, waits for the sweep to finish and saves its page.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

import redis

from core import migrate
from core.db import Database
from core.settings import Settings
from tests.conftest import KEYS, add_keys
from tests.e2e.test_dashboard_browser import sign_in, submit_from_form, wait_until_finished
from tests.live import chromium, gunicorn
from tests.support import ROOT, WorkerProcess, redis_url

INSTANCES = [[0.5, -1.2, 0.3, 2.0, -0.5, 0.0, 1.1, -0.7, 0.4, 0.9,
              -1.5, 0.2, 0.8, -0.3, 1.7, -0.9, 0.6, -0.1, 0.5, 1.0]]  # fmt: skip


def main(target: Path, sweep_target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="trainsvc-shot-") as scratch, ExitStack() as cleanup:
        tmp = Path(scratch)
        url = f"sqlite:///{tmp / 'service.db'}"
        migrate.upgrade(url)
        add_keys(Database(url))
        broker = redis_url() or f"filesystem://{tmp / 'broker'}"
        queue = f"trainsvc-shot-{uuid.uuid4().hex[:8]}"
        env = {"DATABASE_URL": url, "BROKER_URL": broker, "QUEUE_NAME": queue, "VAR_DIR": scratch}
        if broker.startswith("redis"):
            cleanup.callback(lambda: redis.Redis.from_url(broker).delete(queue))
        worker = WorkerProcess(env, tmp / "worker.log")
        cleanup.callback(worker.stop)
        worker.wait_ready()
        server = cleanup.enter_context(gunicorn(Settings.from_env(env), tmp / "gunicorn.log"))
        browser = cleanup.enter_context(chromium())
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        sign_in(page, server.url, KEYS["alice"])
        submit_from_form(page, {})
        wait_until_finished(page)
        page.fill("#instances", json.dumps(INSTANCES))
        page.click("#predict-button")
        page.wait_for_selector("#predictions:not([hidden])")
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
        print(f"saved {target}")
        page.click("#compare-form button")
        page.wait_for_function(
            "() => document.getElementById('sweep').dataset.finished === 'true'", timeout=600_000
        )
        page.wait_for_function(
            """() => { const img = document.getElementById('plot');
                       return img.complete && img.naturalWidth > 0; }"""
        )
        sweep_target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(sweep_target), full_page=True)
    print(f"saved {sweep_target}")


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png",
        Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "sweep-dashboard.png",
    )
