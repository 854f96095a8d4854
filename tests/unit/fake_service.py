"""A tiny scripted HTTP server (http.server in a thread) for the client and CLI tests."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message  # case-insensitive, as HTTP headers are
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def json_response(value: Any, status: int = 200, **headers: str) -> Response:
    return Response(
        status, json.dumps(value).encode(), {"Content-Type": "application/json", **headers}
    )


def error_response(
    status: int, code: str, message: str, details: list[Any] | None = None
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return json_response(body, status)


def sse(*events: tuple[str, Any, int | None] | str, pause: float = 0.0) -> Response:
    """An event stream: (event, data, id) triples are encoded, plain strings sent as they are."""

    def chunks() -> Iterator[bytes]:
        for item in events:
            if isinstance(item, str):
                yield item.encode()
            else:
                name, data, event_id = item
                text = f"event: {name}\n"
                if event_id is not None:
                    text += f"id: {event_id}\n"
                yield (text + f"data: {json.dumps(data)}\n\n").encode()
            if pause:
                time.sleep(pause)

    return Response(
        200, chunks(), {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )


class FakeService:
    """Routes (method, path) to handlers and records every request it gets."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[Request] = []
        service = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    url.path,
                    dict(urllib.parse.parse_qsl(url.query)),
                    self.headers,
                    self.rfile.read(length) if length else b"",
                )
                service.requests.append(request)
                handler = service.routes.get((self.command, url.path))
                response = (
                    handler(request)
                    if handler
                    else error_response(404, "not_found", "The requested URL was not found.")
                )
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                if isinstance(response.body, bytes):
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)
                    return
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in response.body:
                    self.wfile.write(chunk)
                    self.wfile.flush()

            do_GET = do_POST = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def route(self, method: str, path: str, handler: Handler | Response) -> None:
        """Answer `method path` with a handler, or always with the same response."""
        if isinstance(handler, Response):
            fixed = handler
            self.routes[(method, path)] = lambda _request: fixed
        else:
            self.routes[(method, path)] = handler

    def start(self) -> FakeService:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sent(self, method: str, path: str) -> list[Request]:
        """The requests received for one route, in order."""
        return [r for r in self.requests if r.method == method and r.path == path]


def job(job_id: str = "job-1", status: str = "running", **fields: Any) -> dict[str, Any]:
    """A job object shaped like the service's."""
    value: dict[str, Any] = {
        "id": job_id,
        "name": "seed-example",
        "status": status,
        "engine": "numpy",
        "created_at": "2025-01-02T03:04:05.123456Z",
        "started_at": "2025-01-02T03:04:06Z" if status != "queued" else None,
        "finished_at": None,
        "progress": {"epoch": 0, "epochs": 3},
        "metrics": {},
        "error": None,
        "model_id": None,
        "attempts": 1,
        "cancel_requested": False,
        "training": None,
        "spec": {},
    }
    value.update(fields)
    return value
