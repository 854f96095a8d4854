"""The learning-curve plot and the Server-Sent Events stream, without a worker process."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from core.db import Database
from core.models import Job, JobMetric, utcnow
from service import events
from service.plots import PlotCache, render_png
from tests.conftest import auth
from tests.sse import Event
from tests.sse import events as parse_events
from tests.unit.test_api import assert_error, small_spec, submit
from worker.jobs import claim, run_job

ALICE, BOB = auth("alice"), auth("bob")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def finished_job(client: FlaskClient, database: Database, **changes: Any) -> dict[str, Any]:
    job = submit(client, small_spec(**changes)).get_json()
    assert run_job(database, job["id"]) == "succeeded"
    return dict(client.get(f"/v1/jobs/{job['id']}", headers=ALICE).get_json())


def test_plot_of_a_finished_job_is_a_cached_two_panel_png(
    client: FlaskClient, database: Database, app: Flask
) -> None:
    job = finished_job(client, database, epochs=4)
    response = client.get(f"/v1/jobs/{job['id']}/plot.png", headers=ALICE)
    assert response.status_code == 200 and response.mimetype == "image/png"
    width, height = png_size(response.data)
    assert width > 1.6 * height  # loss and accuracy side by side
    assert "max-age" in response.headers["Cache-Control"]
    etag = response.headers["ETag"]
    assert len(app.extensions["trainsvc.plots"]) == 1
    again = client.get(f"/v1/jobs/{job['id']}/plot.png", headers=ALICE)
    assert again.data == response.data and again.headers["ETag"] == etag
    unchanged = client.get(
        f"/v1/jobs/{job['id']}/plot.png", headers={**ALICE, "If-None-Match": etag}
    )
    assert unchanged.status_code == 304 and unchanged.data == b""


def test_plot_of_a_regression_job_has_one_panel(client: FlaskClient, database: Database) -> None:
    spec = small_spec(
        dataset={"builtin": "make_regression", "params": {"n_samples": 200, "n_features": 5}},
        layers=[{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 1}],
        loss="mse",
    )
    job = submit(client, spec).get_json()
    assert run_job(database, job["id"]) == "succeeded"
    png = client.get(f"/v1/jobs/{job['id']}/plot.png", headers=ALICE).data
    width, height = png_size(png)
    assert width < 1.6 * height


def test_plot_of_an_unfinished_job_is_fresh_and_not_cached(client: FlaskClient, app: Flask) -> None:
    job = submit(client, small_spec()).get_json()
    response = client.get(f"/v1/jobs/{job['id']}/plot.png", headers=ALICE)
    assert response.status_code == 200 and response.data.startswith(PNG_MAGIC)
    assert response.headers["Cache-Control"] == "no-cache"
    assert len(app.extensions["trainsvc.plots"]) == 0


def test_plot_is_private_to_its_tenant(client: FlaskClient) -> None:
    job = submit(client, small_spec()).get_json()
    assert_error(client.get(f"/v1/jobs/{job['id']}/plot.png", headers=BOB), 404, "not_found")
    assert_error(client.get(f"/v1/jobs/{job['id']}/plot.png"), 401, "unauthorized")
    assert_error(client.get("/v1/jobs/nope/plot.png", headers=ALICE), 404, "not_found")


def test_plot_cache_is_bounded_lru() -> None:
    cache = PlotCache(size=2)
    png = render_png([{"epoch": 1, "loss": 1.0, "val_loss": None, "seconds": 0.1}], "t")
    cache.put("a", png)
    cache.put("b", png)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", png)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is not None


def read_stream(client: FlaskClient, url: str, **headers: str) -> tuple[Any, list[Event]]:
    response = client.get(url, headers={**ALICE, **headers})
    return response, list(parse_events([response.get_data(as_text=True)]))


def test_events_of_a_finished_job_status_then_every_epoch_then_end(
    client: FlaskClient, database: Database
) -> None:
    job = finished_job(client, database, epochs=3)
    response, got = read_stream(client, f"/v1/jobs/{job['id']}/events")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert [e.event for e in got] == ["status", "epoch", "epoch", "epoch"]
    assert got[0].data == job
    history = client.get(f"/v1/jobs/{job['id']}/metrics", headers=ALICE).get_json()["history"]
    assert [e.data for e in got[1:]] == history
    assert [e.id for e in got[1:]] == ["1", "2", "3"]


def test_events_resume_after_the_last_seen_epoch(client: FlaskClient, database: Database) -> None:
    job = finished_job(client, database, epochs=3)
    url = f"/v1/jobs/{job['id']}/events"
    _, got = read_stream(client, url, **{"Last-Event-ID": "1"})
    assert [(e.event, e.id) for e in got] == [("status", None), ("epoch", "2"), ("epoch", "3")]
    _, got = read_stream(client, url + "?after=2")
    assert [(e.event, e.id) for e in got] == [("status", None), ("epoch", "3")]
    _, got = read_stream(client, url + "?after=3")
    assert [e.event for e in got] == ["status"]
    response, _ = read_stream(client, url + "?after=-1")
    assert_error(response, 422, "validation_error")
    response, _ = read_stream(client, url, **{"Last-Event-ID": "x"})
    assert_error(response, 422, "validation_error")


def test_events_are_private_to_their_tenant(client: FlaskClient) -> None:
    job = submit(client, small_spec()).get_json()
    assert_error(client.get(f"/v1/jobs/{job['id']}/events", headers=BOB), 404, "not_found")
    assert_error(client.get(f"/v1/jobs/{job['id']}/events"), 401, "unauthorized")


class Script:
    """A fake clock and a `sleep` that runs the next scripted change to the database."""

    def __init__(self, *steps: tuple[float, Callable[[], None]]) -> None:
        self.now = 0.0
        self.steps = list(steps)

    def clock(self) -> float:
        return self.now

    def sleep(self, _seconds: float) -> None:
        assert self.steps, "the stream kept polling after the script ended"
        advance, change = self.steps.pop(0)
        self.now += advance
        change()


def add_epochs(database: Database, job_id: str, *epochs: int) -> None:
    with database.begin() as session:
        for epoch in epochs:
            session.add(JobMetric(job_id=job_id, epoch=epoch, loss=1.0 / epoch, seconds=0.01))
        session.execute(update(Job).where(Job.id == job_id).values(progress_epoch=max(epochs)))


def set_status(database: Database, job_id: str, status: str) -> None:
    with database.begin() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status=status, finished_at=utcnow())
        )


def test_events_follow_a_running_job_until_it_ends(client: FlaskClient, database: Database) -> None:
    job_id = submit(client, small_spec(epochs=3)).get_json()["id"]

    def start() -> None:
        claim(database, job_id)
        add_epochs(database, job_id, 1, 2)

    def finish() -> None:
        add_epochs(database, job_id, 3)
        set_status(database, job_id, "succeeded")

    script = Script((0.5, start), (16.0, lambda: None), (0.5, finish))
    stream = events.job_events(database, job_id, "alice", clock=script.clock, sleep=script.sleep)
    got = list(parse_events(stream))
    assert [(e.event, e.id) for e in got] == [
        ("status", None),
        ("status", None),
        ("epoch", "1"),
        ("epoch", "2"),
        ("comment", None),
        ("epoch", "3"),
        ("status", None),
    ]
    assert [e.data["status"] for e in got if e.event == "status"] == [
        "queued",
        "running",
        "succeeded",
    ]
    assert got[4].data == "keepalive"
    assert not script.steps


def test_events_replay_the_history_of_a_retried_job(
    client: FlaskClient, database: Database
) -> None:
    job_id = submit(client, small_spec(epochs=3)).get_json()["id"]

    def retry() -> None:  # the worker died: requeued, claimed again, history starts afresh
        set_status(database, job_id, "queued")
        claim(database, job_id)
        add_epochs(database, job_id, 1)

    script = Script((0.5, retry), (0.5, lambda: set_status(database, job_id, "cancelled")))
    claim(database, job_id)
    add_epochs(database, job_id, 1, 2)
    stream = events.job_events(database, job_id, "alice", clock=script.clock, sleep=script.sleep)
    got = [(e.event, e.id) for e in parse_events(stream)]
    assert got == [
        ("status", None),
        ("epoch", "1"),
        ("epoch", "2"),
        ("status", None),  # attempt 2
        ("epoch", "1"),
        ("status", None),  # cancelled
    ]


def test_events_can_be_bounded_in_time(client: FlaskClient, database: Database) -> None:
    job_id = submit(client, small_spec()).get_json()["id"]
    script = Script(*[(0.5, lambda: None)] * 10)
    stream = events.job_events(
        database, job_id, "alice", max_seconds=2, clock=script.clock, sleep=script.sleep
    )
    assert [e.event for e in parse_events(stream)] == ["status"]
    assert script.now == 2.0
