"""Plot and Server-Sent Events through real gunicorn (gevent) with a real worker and broker."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import auth
from tests.integration.conftest import Stack
from tests.live import Gunicorn, gunicorn
from tests.sse import Event, events
from tests.support import SEED_SPEC

pytestmark = pytest.mark.integration
ALICE, BOB = auth("alice"), auth("bob")
EPOCHS = 200


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[Gunicorn]:
    with gunicorn(stack.settings, stack.settings.var_dir / "gunicorn.log") as running:
        yield running


def submit(server: Gunicorn, epochs: int = EPOCHS) -> dict[str, Any]:
    spec = copy.deepcopy(SEED_SPEC)
    spec["epochs"] = epochs
    answer = requests.post(f"{server.url}/v1/jobs", json=spec, headers=ALICE, timeout=10)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def watch(server: Gunicorn, job_id: str, **headers: str) -> list[tuple[float, Event]]:
    """Read the job's stream to its end: (arrival time, event) pairs."""
    url = f"{server.url}/v1/jobs/{job_id}/events"
    with requests.get(url, headers={**ALICE, **headers}, stream=True, timeout=60) as answer:
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "text/event-stream"
        assert answer.headers["X-Accel-Buffering"] == "no"
        chunks = answer.iter_content(chunk_size=None, decode_unicode=True)
        return [(time.monotonic(), event) for event in events(chunks)]


def test_events_stream_a_training_job_live_through_gunicorn(server: Gunicorn) -> None:
    job = submit(server)
    got = watch(server, job["id"])
    kinds = [e.event for _, e in got]
    statuses = [e.data["status"] for _, e in got if e.event == "status"]
    assert kinds[0] == "status" and kinds[-1] == "status"
    assert statuses[-1] == "succeeded" and statuses[0] in ("queued", "running")
    assert len(statuses) == len(set(statuses)), "a status event without a change"
    epochs = [int(e.id or 0) for _, e in got if e.event == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1))
    first_epoch_at = next(t for t, e in got if e.event == "epoch")
    assert got[-1][0] - first_epoch_at > 0.5, "the epochs arrived all at once, not as trained"
    final = got[-1][1].data
    assert final["progress"] == {"epoch": EPOCHS, "epochs": EPOCHS} and final["model_id"]
    history = requests.get(
        f"{server.url}/v1/jobs/{job['id']}/metrics", headers=ALICE, timeout=10
    ).json()["history"]
    assert [e.data for _, e in got if e.event == "epoch"] == history


def test_events_resume_and_other_requests_are_served_meanwhile(server: Gunicorn) -> None:
    job = submit(server, epochs=20)
    watch(server, job["id"])
    resumed = [e for _, e in watch(server, job["id"], **{"Last-Event-ID": "17"})]
    assert [(e.event, e.id) for e in resumed] == [
        ("status", None),
        ("epoch", "18"),
        ("epoch", "19"),
        ("epoch", "20"),
    ]
    # A stream that stays open (a long job, cancelled below) is a parked greenlet; other
    # requests keep being answered.
    spec = copy.deepcopy(SEED_SPEC)
    spec["epochs"] = 10_000
    long_job = requests.post(f"{server.url}/v1/jobs", json=spec, headers=ALICE, timeout=10).json()
    url = f"{server.url}/v1/jobs/{long_job['id']}/events"
    with requests.get(url, headers=ALICE, stream=True, timeout=60) as open_stream:
        first = next(events(open_stream.iter_content(chunk_size=None, decode_unicode=True)))
        assert first.event == "status"
        started = time.monotonic()
        assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
        cancel = requests.post(f"{url.removesuffix('/events')}/cancel", headers=ALICE, timeout=10)
        assert cancel.status_code == 202
    other = requests.get(f"{server.url}/v1/jobs/{job['id']}/events", headers=BOB, timeout=10)
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"


def test_plot_through_gunicorn_is_cached_once_finished(server: Gunicorn) -> None:
    job = submit(server, epochs=20)
    watch(server, job["id"])
    url = f"{server.url}/v1/jobs/{job['id']}/plot.png"
    answer = requests.get(url, headers=ALICE, timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
    assert answer.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert "max-age" in answer.headers["Cache-Control"]
    etag = answer.headers["ETag"]
    again = requests.get(url, headers={**ALICE, "If-None-Match": etag}, timeout=30)
    assert again.status_code == 304
    assert requests.get(url, headers=BOB, timeout=30).status_code == 404
