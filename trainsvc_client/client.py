"""`Client`: the training service's HTTP API from Python, with the standard library only."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from trainsvc_client.sse import ServerSentEvent, iter_lines, parse_events

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
USER_AGENT = "trainsvc-client/0.1"
# The server sends a keepalive comment every 15 s; a quieter stream than this is a dead one.
STREAM_READ_TIMEOUT = 45.0

Json = dict[str, Any]


class TrainsvcError(Exception):
    """Base class of every error the client raises."""


class ConnectError(TrainsvcError):
    """The service could not be reached (refused, unknown host, timed out, dropped)."""


class WaitTimeout(TrainsvcError, TimeoutError):
    """`Client.wait` gave up before the job finished."""


class ApiError(TrainsvcError):
    """An error answer from the service: `{"error": {"code", "message", "details"}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, details or [])
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"{self.message} ({self.status} {self.code})"
        problems = []
        for item in self.details:
            if isinstance(item, dict) and "message" in item:
                field = item.get("field")
                problems.append(f"{field}: {item['message']}" if field else str(item["message"]))
            else:
                problems.append(str(item))
        if problems:
            text += ": " + "; ".join(problems)
        return text

    @classmethod
    def from_response(cls, status: int, body: bytes, headers: Any = None) -> ApiError:
        """Build from an HTTP error answer, whether or not it has the service's error body."""
        retry_after = None
        if headers is not None and headers.get("Retry-After"):
            try:
                retry_after = float(headers["Retry-After"])
            except ValueError:
                retry_after = None
        try:
            error = json.loads(body)["error"]
            return cls(
                status,
                str(error.get("code") or "error"),
                str(error.get("message") or "") or http.client.responses.get(status, "HTTP error"),
                list(error.get("details") or []),
                retry_after,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            reason = http.client.responses.get(status, "HTTP error")
            snippet = body[:200].decode("utf-8", errors="replace").strip()
            message = f"{reason}: {snippet}" if snippet else reason
            return cls(status, "http_error", message, [], retry_after)


def _job_id(job_or_id: str | Json) -> str:
    return str(job_or_id["id"]) if isinstance(job_or_id, dict) else job_or_id


class Client:
    """The service's v1 HTTP API. URL and key default to $TRAINSVC_URL and $TRAINSVC_API_KEY."""

    # Seconds before reconnecting to a dropped event stream (doubling while attempts fail);
    # a `retry:` field from the server replaces it.
    reconnect_delay = 0.5

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30
    ) -> None:
        self.base_url = (base_url or os.environ.get("TRAINSVC_URL") or DEFAULT_URL).rstrip("/")
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ValueError(
                f"the service URL must start with http:// or https://: {self.base_url}"
            )
        self.api_key = api_key if api_key is not None else os.environ.get("TRAINSVC_API_KEY")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # -- transport ---------------------------------------------------------------------------

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The absolute URL of an API path, with the non-None `params` as its query."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url + path
        return f"{url}?{urllib.parse.urlencode(query)}" if query else url

    def open(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request and return the open response; error answers raise `ApiError`."""
        url = self.url(path, params)
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        if content_type:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        # The scheme is checked to be http or https in __init__.
        request = urllib.request.Request(url, data=body, headers=all_headers, method=method)  # noqa: S310
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(  # noqa: S310
                request, timeout=self.timeout if timeout is None else timeout
            )
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError.from_response(exc.code, exc.read(), exc.headers) from None
        except urllib.error.URLError as exc:
            raise ConnectError(self._unreachable(exc.reason)) from None
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise ConnectError(self._unreachable(exc)) from None
        return response

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused (is the service running?)"
        elif isinstance(reason, TimeoutError | socket.timeout):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(reason, socket.gaierror):
            why = f"unknown host ({reason.strerror})"
        else:
            why = str(reason) or type(reason).__name__
        return f"cannot reach the service at {self.base_url}: {why}"

    def download(self, path: str, accept: str, params: dict[str, Any] | None = None) -> bytes:
        """GET a file (a PNG, an exported model) as bytes."""
        response = self.open("GET", path, params=params, headers={"Accept": accept})
        with response:
            data: bytes = response.read()
        return data

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a request (with an optional JSON body) and return the decoded JSON answer."""
        body = None if json_body is None else json.dumps(json_body).encode()
        content_type = None if json_body is None else "application/json"
        response = self.open(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )
        with response:
            try:
                raw = response.read()
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                raise ConnectError(self._unreachable(exc)) from None
        if not raw and response.status == 204:
            return None  # deleted: no body
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(
                response.status, "bad_response", f"the answer to {method} {path} is not JSON"
            ) from None

    # -- jobs --------------------------------------------------------------------------------

    def submit(self, spec: Json, dry_run: bool = False, idempotency_key: str | None = None) -> Json:
        """Submit a job spec: the queued job, or with `dry_run` the model summary only."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"dry_run": "true"} if dry_run else None
        result: Json = self.request(
            "POST", "/v1/jobs", params=params, json_body=spec, headers=headers
        )
        return result

    def job(self, job_id: str) -> Json:
        """One job."""
        result: Json = self.request("GET", f"/v1/jobs/{_quote(job_id)}")
        return result

    def jobs(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> Json:
        """One page of jobs, newest first: `{"items": [...], "next_cursor": ...}`."""
        params = {"status": status, "limit": limit, "cursor": cursor}
        result: Json = self.request("GET", "/v1/jobs", params=params)
        return result

    def iter_jobs(self, status: str | None = None, page_size: int = 100) -> Iterator[Json]:
        """Every job, newest first, fetching pages as needed."""
        return _paged(self.jobs, status, page_size)

    def metrics(self, job_id: str) -> Json:
        """A job's per-epoch history: `{"job_id", "history": [...]}`."""
        result: Json = self.request("GET", f"/v1/jobs/{_quote(job_id)}/metrics")
        return result

    def cancel(self, job_id: str) -> Json:
        """Cancel a job (a running one stops after its current epoch); 409 once it finished."""
        result: Json = self.request("POST", f"/v1/jobs/{_quote(job_id)}/cancel")
        return result

    def plot(self, job_id: str) -> bytes:
        """The job's learning curves as PNG bytes."""
        return self.download(f"/v1/jobs/{_quote(job_id)}/plot.png", "image/png")

    # -- live progress -----------------------------------------------------------------------

    def stream(
        self, job_id: str, last_event_id: str | None = None, read_timeout: float | None = None
    ) -> Iterator[ServerSentEvent]:
        """A job's raw Server-Sent Events, from after `last_event_id` until the stream ends."""
        return self._stream(f"/v1/jobs/{_quote(job_id)}/events", last_event_id, read_timeout)

    def _stream(
        self, path: str, last_event_id: str | None, read_timeout: float | None
    ) -> Iterator[ServerSentEvent]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        response = self.open(
            "GET",
            path,
            headers=headers,
            timeout=read_timeout if read_timeout else max(self.timeout, STREAM_READ_TIMEOUT),
        )
        with response:
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith("text/event-stream"):
                raise ApiError(
                    response.status,
                    "bad_response",
                    f"expected an event stream from {self.url(path)}, "
                    f"got {content_type or 'no content type'}",
                )
            yield from parse_events(iter_lines(_chunks(response)), last_event_id)

    def events(self, job_id: str, after: int | None = None) -> Iterator[tuple[str, Any]]:
        """(event, data) pairs from the job's event stream; `after` skips epochs up to it."""
        for event in self.stream(job_id, None if after is None else str(after)):
            yield event.event, _decode(event.data)

    def wait(
        self,
        job_id: str | Json,
        on_epoch: Callable[[Json], object] | None = None,
        on_status: Callable[[Json], object] | None = None,
        timeout: float | None = None,
        max_reconnects: int = 5,
    ) -> Json:
        """Follow a job's events until it finishes and return the final job.

        Reconnects with Last-Event-ID when the stream drops; gives up after `max_reconnects`
        attempts in a row that receive nothing, or raises `WaitTimeout` after `timeout` seconds.
        """
        job_id = _job_id(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: str | None = None
        last_job: Json | None = None
        failures = 0
        delay = self.reconnect_delay
        while True:
            received = False
            error: ConnectError | None = None
            read_timeout = max(self.timeout, STREAM_READ_TIMEOUT)
            if deadline is not None:
                read_timeout = min(read_timeout, max(deadline - time.monotonic(), 0.1))
            try:
                for event in self.stream(job_id, last_id, read_timeout=read_timeout):
                    received = True
                    last_id = event.id if event.id is not None else last_id
                    if event.retry is not None:
                        delay = event.retry / 1000
                    data = _decode(event.data)
                    if event.event == "epoch" and on_epoch is not None:
                        on_epoch(data)
                    elif event.event == "status":
                        last_job = data
                        if on_status is not None:
                            on_status(data)
            except ApiError as exc:
                if exc.status not in (429, 502, 503, 504):
                    raise
                error = ConnectError(f"the service at {self.base_url} answered {exc}")
                delay = max(delay, exc.retry_after or 0)
            except ConnectError as exc:
                error = exc
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                error = ConnectError(
                    f"lost the event stream of job {job_id} at {self.base_url}: "
                    f"{exc or type(exc).__name__}"
                )
            if last_job is not None and last_job.get("status") in TERMINAL:
                return last_job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} did not finish within {timeout:g} s")
            failures = 0 if received else failures + 1
            if failures > max_reconnects:
                raise error or ConnectError(
                    f"the event stream of job {job_id} keeps ending before the job finishes"
                )
            pause = min(delay * 2 ** max(failures - 1, 0), 10.0)
            if deadline is not None:
                pause = min(pause, max(deadline - time.monotonic(), 0))
            time.sleep(pause)

    # -- sweeps ------------------------------------------------------------------------------

    def submit_sweep(
        self, sweep: Json, dry_run: bool = False, idempotency_key: str | None = None
    ) -> Json:
        """Submit a sweep (base spec, space, strategy): the queued sweep, or with `dry_run` the
        trials (grid) or the space (random, tpe) and the largest network's parameter count."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"dry_run": "true"} if dry_run else None
        result: Json = self.request(
            "POST", "/v1/sweeps", params=params, json_body=sweep, headers=headers
        )
        return result

    def sweep(self, sweep_id: str) -> Json:
        """One sweep, with its progress, best trial and leaderboard (best first)."""
        result: Json = self.request("GET", f"/v1/sweeps/{_quote(sweep_id)}")
        return result

    def sweeps(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> Json:
        """One page of sweeps, newest first: `{"items": [...], "next_cursor": ...}`."""
        params = {"status": status, "limit": limit, "cursor": cursor}
        result: Json = self.request("GET", "/v1/sweeps", params=params)
        return result

    def iter_sweeps(self, status: str | None = None, page_size: int = 100) -> Iterator[Json]:
        """Every sweep, newest first, fetching pages as needed."""
        return _paged(self.sweeps, status, page_size)

    def cancel_sweep(self, sweep_id: str) -> Json:
        """Cancel a sweep: no new trials start and its running trials are cancelled."""
        result: Json = self.request("POST", f"/v1/sweeps/{_quote(sweep_id)}/cancel")
        return result

    def sweep_plot(self, sweep_id: str) -> bytes:
        """Every trial's validation curve overlaid, beside the objective per parameter (PNG)."""
        return self.download(f"/v1/sweeps/{_quote(sweep_id)}/plot.png", "image/png")

    def sweep_stream(
        self, sweep_id: str, last_event_id: str | None = None, read_timeout: float | None = None
    ) -> Iterator[ServerSentEvent]:
        """A sweep's raw Server-Sent Events (trial starts, epochs, ends) until the stream ends."""
        return self._stream(f"/v1/sweeps/{_quote(sweep_id)}/events", last_event_id, read_timeout)

    def sweep_events(self, sweep_id: str) -> Iterator[tuple[str, Any]]:
        """(event, data) pairs from the sweep's event stream."""
        for event in self.sweep_stream(sweep_id):
            yield event.event, _decode(event.data)

    def wait_sweep(
        self,
        sweep_id: str | Json,
        on_progress: Callable[[Json], object] | None = None,
        timeout: float | None = None,
        poll_interval: float = 1.0,
    ) -> Json:
        """Follow a sweep until it ends and return the final sweep (with its leaderboard).

        `on_progress` gets the sweep each time its state, progress or best trial changes: from
        the `sweep` events of its event stream, or, when there is no stream (refused, dropped,
        or ending without news), by reading the sweep every `poll_interval` seconds. Raises
        `WaitTimeout` after `timeout` seconds.
        """
        sweep_id = _job_id(sweep_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Json | None = None

        def seen(sweep: Json) -> bool:
            """Pass a new state on; whether the sweep has ended."""
            nonlocal last
            state = {k: v for k, v in sweep.items() if k != "leaderboard"}
            if state != last and on_progress is not None:
                on_progress(sweep)
            last = state
            return sweep.get("status") in TERMINAL

        def remaining() -> float | None:
            if deadline is None:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"sweep {sweep_id} did not finish within {timeout:g} s")
            return left

        streaming = True
        while True:
            left = remaining()
            if streaming:
                read_timeout = max(self.timeout, STREAM_READ_TIMEOUT)
                if left is not None:
                    read_timeout = min(read_timeout, max(left, 0.1))
                news = False
                try:
                    for event in self.sweep_stream(sweep_id, read_timeout=read_timeout):
                        if event.event == "sweep":
                            news = True
                            if seen(_decode(event.data)):
                                return self.sweep(sweep_id)
                        remaining()
                except ApiError as exc:
                    if exc.status not in (404, 405, 429, 501, 502, 503, 504):
                        raise
                    news = False
                except (ConnectError, TimeoutError, ConnectionError, http.client.HTTPException):
                    news = False
                # A stream that ended with news is reopened; otherwise read the sweep on a timer.
                streaming = news
            else:
                time.sleep(poll_interval if left is None else min(poll_interval, left))
            sweep = self.sweep(sweep_id)
            if seen(sweep):
                return sweep

    # -- models ------------------------------------------------------------------------------

    def model(self, model_id: str) -> Json:
        """A model's metadata."""
        result: Json = self.request("GET", f"/v1/models/{_quote(model_id)}")
        return result

    def predict(self, model_id: str, instances: list[list[Any]]) -> Json:
        """Predictions for rows of raw features: `predictions` (and `probabilities`)."""
        result: Json = self.request(
            "POST",
            f"/v1/models/{_quote(model_id)}/predict",
            json_body={"instances": instances},
        )
        return result

    # -- evaluation and export ---------------------------------------------------------------

    EXPORT_FORMATS = ("onnx", "npz")

    def evaluation_plot(self, model_id: str) -> bytes:
        """The model's evaluation (confusion matrix or residuals) as PNG bytes."""
        return self.download(f"/v1/models/{_quote(model_id)}/evaluation.png", "image/png")

    def export(self, model_id: str, format: str = "onnx") -> bytes:
        """The model as a file: `onnx` (an ONNX graph) or `npz` (the stored artifact)."""
        return self.download(
            f"/v1/models/{_quote(model_id)}/export",
            "application/octet-stream",
            params={"format": format},
        )

    # -- datasets ----------------------------------------------------------------------------

    def upload_dataset(
        self, path_or_file: str | os.PathLike[str] | IO[bytes], label: str, name: str | None = None
    ) -> Json:
        """Upload a CSV file (header row, `label` names the target column) as a dataset."""
        if isinstance(path_or_file, str | os.PathLike):
            path = Path(path_or_file)
            data = path.read_bytes()
            name = name or path.stem
        else:
            data = path_or_file.read()
        response = self.open(
            "POST",
            "/v1/datasets",
            params={"label": label, "name": name},
            body=data,
            content_type="text/csv",
        )
        with response:
            result: Json = json.loads(response.read())
        return result

    def datasets(self, limit: int | None = None, cursor: str | None = None) -> Json:
        """One page of datasets, newest first: `{"items": [...], "next_cursor": ...}`."""
        result: Json = self.request(
            "GET", "/v1/datasets", params={"limit": limit, "cursor": cursor}
        )
        return result

    def dataset(self, dataset_id: str) -> Json:
        """One dataset: rows, columns, features, label and label counts."""
        result: Json = self.request("GET", f"/v1/datasets/{_quote(dataset_id)}")
        return result

    # -- the model registry ------------------------------------------------------------------

    def register_model(self, name: str, description: str | None = None) -> Json:
        """Create a registered model name (versions are added with `add_version`)."""
        body = {"name": name, "description": description}
        result: Json = self.request("POST", "/v1/registered-models", json_body=body)
        return result

    def registered_models(self, limit: int | None = None, cursor: str | None = None) -> Json:
        """One page of registered models, newest first: `{"items": [...], "next_cursor"}`."""
        params = {"limit": limit, "cursor": cursor}
        result: Json = self.request("GET", "/v1/registered-models", params=params)
        return result

    def registered_model(self, name: str) -> Json:
        """A registered model: description, latest version, aliases."""
        result: Json = self.request("GET", _registered(name))
        return result

    def update_registered_model(self, name: str, description: str | None) -> Json:
        """Change a registered model's description."""
        body = {"description": description}
        result: Json = self.request("PATCH", _registered(name), json_body=body)
        return result

    def delete_registered_model(self, name: str) -> None:
        """Delete a registered model with its versions and aliases (the models stay)."""
        self.request("DELETE", _registered(name))

    def add_version(self, name: str, model_id: str) -> Json:
        """Register a trained model as the name's next version."""
        body = {"model_id": model_id}
        result: Json = self.request("POST", _registered(name, "versions"), json_body=body)
        return result

    def versions(self, name: str) -> list[Json]:
        """A registered model's versions, oldest first (each with its aliases)."""
        result: list[Json] = self.request("GET", _registered(name, "versions"))["items"]
        return result

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version (refused with 409 while an alias points at it)."""
        self.request("DELETE", _registered(name, "versions", str(version)))

    def set_alias(self, name: str, alias: str, version: int) -> Json:
        """Point `alias` (e.g. production) at a version, creating or moving it."""
        body = {"version": version}
        result: Json = self.request("PUT", _registered(name, "aliases", alias), json_body=body)
        return result

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", _registered(name, "aliases", alias))

    def registry_history(self, name: str, limit: int | None = None) -> Json:
        """A registered model's changes, newest first: what, who and when."""
        params = {"limit": limit}
        result: Json = self.request("GET", _registered(name, "history"), params=params)
        return result

    def predict_registered(
        self,
        name: str,
        instances: list[list[Any]],
        alias: str | None = None,
        version: int | None = None,
    ) -> Json:
        """Predictions from a registered model's alias (default production) or version."""
        if version is not None:
            path = _registered(name, "versions", str(version), "predict")
        else:
            path = f"/v1/registered-models/{_quote(name)}@{_quote(alias or 'production')}/predict"
        result: Json = self.request("POST", path, json_body={"instances": instances})
        return result


def _registered(name: str, *parts: str) -> str:
    return "/".join(["/v1/registered-models", _quote(name), *(_quote(p) for p in parts)])


def _paged(fetch: Callable[..., Json], status: str | None, page_size: int) -> Iterator[Json]:
    """Every item of a listing, following `next_cursor` page after page as needed."""
    cursor = None
    while True:
        page = fetch(status=status, limit=page_size, cursor=cursor)
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def _quote(segment: str) -> str:
    return urllib.parse.quote(str(segment), safe="")


def _decode(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """Whatever bytes have arrived, as soon as they arrive, until the end of the body."""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            return
        yield chunk
