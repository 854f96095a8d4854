"""The Python client: SSE parsing, error mapping, requests it sends, and wait() reconnecting."""

from __future__ import annotations

import io
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.fake_service import (
    FakeService,
    Request,
    Response,
    error_response,
    job,
    json_response,
    sse,
)
from trainsvc_client import ApiError, Client, ConnectError, ServerSentEvent, WaitTimeout
from trainsvc_client.sse import iter_lines, parse_events


def parse(raw: bytes, chunk_size: int | None = None) -> list[ServerSentEvent]:
    size = chunk_size or len(raw) or 1
    chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
    return list(parse_events(iter_lines(chunks)))


@pytest.fixture
def service() -> Iterator[FakeService]:
    fake = FakeService().start()
    yield fake
    fake.stop()


@pytest.fixture
def client(service: FakeService) -> Client:
    client = Client(service.url, "secret-key", timeout=5)
    client.reconnect_delay = 0.01
    return client


# -- SSE parsing ------------------------------------------------------------------------------


def test_sse_fields_comments_and_dispatch() -> None:
    raw = (
        b": keepalive\n\n"
        b'event: status\ndata: {"status": "running"}\n\n'
        b'event: epoch\nid: 1\ndata: {"epoch": 1}\n\n'
        b"data: first\ndata: second\n\n"
    )
    events = parse(raw)
    assert events == [
        ServerSentEvent("status", '{"status": "running"}', None),
        ServerSentEvent("epoch", '{"epoch": 1}', "1"),
        # no event field: "message"; the last id carries over; data lines join with \n
        ServerSentEvent("message", "first\nsecond", "1"),
    ]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_every_line_ending_and_any_chunking(newline: bytes) -> None:
    text = b"\xef\xbb\xbf" + newline.join(
        [b"event: epoch", b"id: 7", b'data: {"epoch": 7}', b"", b": ping", b"", b"data:x", b"", b""]
    )
    expected = [ServerSentEvent("epoch", '{"epoch": 7}', "7"), ServerSentEvent("message", "x", "7")]
    assert parse(text) == expected
    rng = random.Random(0)
    for _ in range(50):  # split the bytes at random places, including between \r and \n
        cuts = sorted(rng.sample(range(1, len(text)), 5))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(parse_events(iter_lines(chunks))) == expected


def test_sse_spec_corner_cases() -> None:
    raw = (
        b"data\n\n"  # a field name alone: empty value, still dispatched
        b"data:  two spaces\n\n"  # only one leading space is removed
        b"event: lonely\n\n"  # no data: nothing dispatched
        b"id: 5\0x\ndata: nul id ignored\n\n"
        b"retry: 1500\nunknown: field\ndata: r\n\n"
        b"retry: soon\ndata: bad retry kept\n\n"
        b"id\ndata: id reset\n\n"
        b"data: never finished\n"  # the stream ends before the blank line: discarded
    )
    assert parse(raw, chunk_size=3) == [
        ServerSentEvent("message", "", None),
        ServerSentEvent("message", " two spaces", None),
        ServerSentEvent("message", "nul id ignored", None),
        ServerSentEvent("message", "r", None, 1500),
        ServerSentEvent("message", "bad retry kept", None, 1500),
        ServerSentEvent("message", "id reset", "", 1500),
    ]


def test_sse_multibyte_text_split_across_chunks() -> None:
    raw = "data: ünïcode ✓\n\n".encode()
    assert parse(raw, chunk_size=1) == [ServerSentEvent("message", "ünïcode ✓")]


# -- errors -----------------------------------------------------------------------------------


def test_api_error_from_the_service_body_lists_field_paths() -> None:
    body = (
        b'{"error": {"code": "invalid_spec", "message": "the job spec has 2 problem(s)", '
        b'"details": [{"field": "layers[3].activation", "message": "Input should be relu"},'
        b' {"field": "epochs", "message": "too large"}]}}'
    )
    error = ApiError.from_response(422, body)
    assert (error.status, error.code) == (422, "invalid_spec")
    assert error.details[0]["field"] == "layers[3].activation"
    assert str(error) == (
        "the job spec has 2 problem(s) (422 invalid_spec): "
        "layers[3].activation: Input should be relu; epochs: too large"
    )


def test_api_error_from_a_body_that_is_not_the_service_s() -> None:
    error = ApiError.from_response(502, b"<html>Bad Gateway</html>", {"Retry-After": "3"})
    assert (error.status, error.code, error.retry_after) == (502, "http_error", 3.0)
    assert "Bad Gateway" in str(error) and "502" in str(error)


def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ConnectError) as caught:
        Client(url, "k").job("x")
    assert str(caught.value) == (
        f"cannot reach the service at {url}: connection refused (is the service running?)"
    )


def test_a_url_without_http_is_refused() -> None:
    with pytest.raises(ValueError, match="http://"):
        Client("file:///etc/passwd")


def test_url_and_key_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINSVC_URL", "http://example.test:9000/")
    monkeypatch.setenv("TRAINSVC_API_KEY", "env-key")
    client = Client()
    assert (client.base_url, client.api_key) == ("http://example.test:9000", "env-key")
    monkeypatch.delenv("TRAINSVC_URL")
    monkeypatch.delenv("TRAINSVC_API_KEY")
    assert (Client().base_url, Client().api_key) == ("http://127.0.0.1:8000", None)


def test_error_answers_raise_api_error(service: FakeService, client: Client) -> None:
    service.route("POST", "/v1/jobs/j1/cancel", error_response(409, "conflict", "job j1 is done"))
    with pytest.raises(ApiError) as caught:
        client.cancel("j1")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        409,
        "conflict",
        "job j1 is done",
    )
    with pytest.raises(ApiError) as missing:
        client.job("nope")
    assert missing.value.status == 404


# -- requests ---------------------------------------------------------------------------------


def test_submit_sends_json_auth_idempotency_and_dry_run(
    service: FakeService, client: Client
) -> None:
    service.route("POST", "/v1/jobs", lambda r: json_response(job(spec=r.json()), 202))
    result = client.submit({"epochs": 2}, idempotency_key="abc")
    assert result["spec"] == {"epochs": 2}
    client.submit({"epochs": 2}, dry_run=True)
    first, second = service.sent("POST", "/v1/jobs")
    assert first.headers["Authorization"] == "Bearer secret-key"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Idempotency-Key"] == "abc"
    assert first.query == {}
    assert second.query == {"dry_run": "true"}
    assert "Idempotency-Key" not in second.headers


def test_iter_jobs_follows_the_cursor(service: FakeService, client: Client) -> None:
    def page(request: Request) -> Response:
        if request.query.get("cursor") == "c2":
            return json_response({"items": [job("j3")], "next_cursor": None})
        return json_response({"items": [job("j1"), job("j2")], "next_cursor": "c2"})

    service.route("GET", "/v1/jobs", page)
    assert [j["id"] for j in client.iter_jobs(status="succeeded", page_size=2)] == [
        "j1",
        "j2",
        "j3",
    ]
    queries = [r.query for r in service.sent("GET", "/v1/jobs")]
    assert queries == [
        {"status": "succeeded", "limit": "2"},
        {"status": "succeeded", "limit": "2", "cursor": "c2"},
    ]


def test_ids_are_quoted_into_the_path(service: FakeService, client: Client) -> None:
    service.route("GET", "/v1/jobs/a%2Fb", json_response(job("a/b")))
    assert client.job("a/b")["id"] == "a/b"


def test_plot_returns_bytes(service: FakeService, client: Client) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    service.route("GET", "/v1/jobs/j1/plot.png", Response(200, png, {"Content-Type": "image/png"}))
    assert client.plot("j1") == png


def test_predict_and_model(service: FakeService, client: Client) -> None:
    service.route(
        "POST",
        "/v1/models/m1/predict",
        lambda r: json_response({"model_id": "m1", "predictions": [len(r.json()["instances"])]}),
    )
    assert client.predict("m1", [[1, 2], [3, 4]])["predictions"] == [2]


def test_upload_dataset_sends_csv_with_label_and_name(
    service: FakeService, client: Client, tmp_path: Path
) -> None:
    service.route("POST", "/v1/datasets", lambda r: json_response({"id": "d1"}, 201))
    path = tmp_path / "flowers.csv"
    path.write_text("a,b,kind\n1,2,x\n")
    assert client.upload_dataset(path, "kind")["id"] == "d1"
    client.upload_dataset(io.BytesIO(b"a,y\n1,0\n"), "y", name="tiny")
    by_path, by_file = service.sent("POST", "/v1/datasets")
    assert by_path.headers["Content-Type"] == "text/csv"
    assert by_path.query == {"label": "kind", "name": "flowers"}
    assert by_path.body == b"a,b,kind\n1,2,x\n"
    assert by_file.query == {"label": "y", "name": "tiny"}
    assert by_file.body == b"a,y\n1,0\n"


# -- events and wait --------------------------------------------------------------------------


def test_events_yields_decoded_pairs_and_sends_last_event_id(
    service: FakeService, client: Client
) -> None:
    service.route(
        "GET",
        "/v1/jobs/j1/events",
        sse(
            ("status", job("j1"), None),
            ": keepalive\n\n",
            ("epoch", {"epoch": 3, "loss": 0.5}, 3),
            ("status", job("j1", "succeeded"), None),
        ),
    )
    events = list(client.events("j1", after=2))
    assert [name for name, _ in events] == ["status", "epoch", "status"]
    assert events[1][1] == {"epoch": 3, "loss": 0.5}
    assert events[2][1]["status"] == "succeeded"
    (request,) = service.sent("GET", "/v1/jobs/j1/events")
    assert request.headers["Last-Event-ID"] == "2"
    assert request.headers["Accept"] == "text/event-stream"


def test_events_refuses_an_answer_that_is_not_a_stream(
    service: FakeService, client: Client
) -> None:
    service.route("GET", "/v1/jobs/j1/events", json_response(job("j1")))
    with pytest.raises(ApiError, match="expected an event stream"):
        list(client.events("j1"))


def test_wait_reconnects_with_last_event_id_after_a_drop(
    service: FakeService, client: Client
) -> None:
    def events(request: Request) -> Response:
        if "Last-Event-ID" not in request.headers:  # first connection drops after epoch 2
            return sse(
                ("status", job("j1"), None),
                ("epoch", {"epoch": 1, "loss": 0.9}, 1),
                ("epoch", {"epoch": 2, "loss": 0.7}, 2),
                'event: epoch\nid: 3\ndata: {"epo',  # cut off mid-event
            )
        after = int(request.headers["Last-Event-ID"])
        rows = [("epoch", {"epoch": e, "loss": 0.5}, e) for e in range(after + 1, 4)]
        final = job("j1", "succeeded", model_id="m1")
        return sse(("status", job("j1"), None), *rows, ("status", final, None))

    service.route("GET", "/v1/jobs/j1/events", events)
    epochs: list[int] = []
    statuses: list[str] = []
    final = client.wait(
        "j1",
        on_epoch=lambda row: epochs.append(row["epoch"]),
        on_status=lambda j: statuses.append(j["status"]),
    )
    assert final["status"] == "succeeded" and final["model_id"] == "m1"
    assert epochs == [1, 2, 3]
    assert statuses == ["running", "running", "succeeded"]
    first, second = service.sent("GET", "/v1/jobs/j1/events")
    assert "Last-Event-ID" not in first.headers
    assert second.headers["Last-Event-ID"] == "2"


def test_wait_gives_up_when_the_stream_keeps_ending_empty(
    service: FakeService, client: Client
) -> None:
    service.route("GET", "/v1/jobs/j1/events", sse(": nothing\n\n"))
    with pytest.raises(ConnectError, match="keeps ending before the job finishes"):
        client.wait("j1", max_reconnects=2)
    assert len(service.sent("GET", "/v1/jobs/j1/events")) == 3


def test_wait_does_not_retry_a_404(service: FakeService, client: Client) -> None:
    service.route("GET", "/v1/jobs/nope/events", error_response(404, "not_found", "no job"))
    with pytest.raises(ApiError) as caught:
        client.wait("nope")
    assert caught.value.status == 404
    assert len(service.sent("GET", "/v1/jobs/nope/events")) == 1


def test_wait_times_out_on_a_silent_stream(service: FakeService, client: Client) -> None:
    service.route(
        "GET", "/v1/jobs/j1/events", sse(("status", job("j1"), None), ": a\n\n", ": b\n\n", pause=1)
    )
    with pytest.raises(WaitTimeout):
        client.wait("j1", timeout=0.5)


def test_wait_retries_a_busy_service(service: FakeService, client: Client) -> None:
    answers = [
        error_response(503, "unavailable", "database down"),
        sse(("status", job("j1", "succeeded"), None)),
    ]
    service.route("GET", "/v1/jobs/j1/events", lambda _r: answers.pop(0))
    assert client.wait("j1")["status"] == "succeeded"
    assert len(service.sent("GET", "/v1/jobs/j1/events")) == 2
