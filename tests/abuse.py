"""`make abuse`: a careless or hostile tenant against a real stack, one line of figures per case.

    .venv/bin/python -m tests.abuse            # full size, SQLite and PostgreSQL
    .venv/bin/python -m tests.abuse --short    # the short form (also run by `make test`)

Each case attacks a real gunicorn (the shipped configuration) + Celery worker + Redis stack as
tenant alice while tenant bob keeps calling `GET /v1/jobs` and `/healthz`; a line says how many
requests the case sent, how many answered 5xx (must be 0), its slowest answer, what it was
answered, and bob's p99 during the attack.
"""

from __future__ import annotations

import argparse
import copy
import http.cookiejar
import json
import logging
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from core.settings import Settings
from tests import streams
from tests.conftest import KEYS
from tests.live import Gunicorn
from tests.support import (
    HALF_SECOND_SPEC,
    SEED_SPEC,
    WorkerProcess,
    private_queue,
    redis_url,
    scratch_database,
)

Json = Any


@dataclass(frozen=True)
class Size:
    """How hard each case pushes: the short form in `make test`, the full one in `make abuse`."""

    uploads: int
    flood: int
    streams: int
    slow_sockets: int
    wrong_keys: int

    @classmethod
    def short(cls) -> Size:
        return cls(uploads=4, flood=60, streams=60, slow_sockets=20, wrong_keys=40)

    @classmethod
    def full(cls) -> Size:
        return cls(uploads=16, flood=1133, streams=500, slow_sockets=50, wrong_keys=200)


@dataclass
class Answer:
    status: int
    seconds: float
    body: bytes

    def json(self) -> Json:
        return json.loads(self.body)


@dataclass
class Figures:
    case: str
    database: str
    requests: int = 0
    server_errors: int = 0
    slowest: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    other_p99_ms: float | None = None
    notes: str = ""
    problems: list[str] = field(default_factory=list)

    def record(self, answer: Answer) -> Answer:
        self.requests += 1
        self.statuses[answer.status] += 1
        self.slowest = max(self.slowest, answer.seconds)
        if answer.status >= 500:
            self.server_errors += 1
        return answer

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return self.server_errors == 0 and not self.problems

    def line(self) -> str:
        answered = ", ".join(f"{n}x{s}" for s, n in sorted(self.statuses.items()))
        p99 = f"{self.other_p99_ms:.0f} ms" if self.other_p99_ms is not None else "-"
        text = (
            f"{'ok  ' if self.ok else 'FAIL'} {self.case:<22} [{self.database}] "
            f"requests {self.requests}, 5xx {self.server_errors}, slowest {self.slowest:.2f} s, "
            f"answered {answered or '-'}, other tenant's p99 {p99}"
        )
        if self.notes:
            text += f"; {self.notes}"
        if self.problems:
            text += " -- " + "; ".join(self.problems)
        return text


class Stack:
    """gunicorn (shipped config) + one Celery worker + Redis + a database, all real processes."""

    def __init__(self, tmp: Path, database: str, cleanup: ExitStack, **env: str) -> None:
        url = scratch_database(database, tmp, cleanup)
        if url is None:
            raise LookupError("PostgreSQL does not answer")
        broker = redis_url()
        if broker is None:
            raise LookupError("the abuse suite needs Redis (the production broker)")
        queue = private_queue(broker, cleanup)
        self.env = {
            "DATABASE_URL": url,
            "BROKER_URL": broker,
            "QUEUE_NAME": queue,
            "VAR_DIR": str(tmp),
            "METRICS_FLUSH_SECONDS": "0.2",
            **env,
        }
        self.settings = Settings.from_env(self.env)
        self.database = database
        self.worker = WorkerProcess(self.env, tmp / "worker.log")
        cleanup.callback(self.worker.stop)
        self.worker.wait_ready()
        extra = {k: v for k, v in env.items() if k not in ("RATE_LIMIT_PER_MINUTE",)}
        # The shipped process count, as `make run` and the compose file use it.
        self.api = Gunicorn(
            self.settings,
            tmp / "gunicorn.log",
            workers=self.settings.web_concurrency,
            **extra,
        )
        cleanup.callback(self.api.stop)
        self.api.wait_ready()
        self.url = self.api.url

    def request(
        self,
        method: str,
        path: str,
        *,
        tenant: str | None = "alice",
        json_body: Json = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Answer:
        """One HTTP request; any status (and a timeout, as 599) is an answer."""
        all_headers = dict(headers or {})
        if tenant is not None:
            all_headers["Authorization"] = f"Bearer {KEYS[tenant]}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=all_headers
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        except (TimeoutError, OSError):
            body, status = b"", 599  # no answer in time counts as a server error
        return Answer(status, time.monotonic() - started, body)


@contextmanager
def other_tenant(stack: Stack, figures: Figures) -> Iterator[None]:
    """Tenant bob's ordinary calls all through the attack; their p99 goes into `figures`."""
    stop = threading.Event()
    seconds: list[float] = []

    def probe() -> None:
        while not stop.is_set():
            for path in ("/v1/jobs?limit=5", "/healthz"):
                answer = stack.request("GET", path, tenant="bob", timeout=30)
                seconds.append(answer.seconds)
                if answer.status >= 500:
                    figures.problems.append(f"bob's GET {path} answered {answer.status}")
            stop.wait(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        if seconds:
            ordered = sorted(seconds)
            figures.other_p99_ms = 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def in_parallel(n: int, call: Callable[[int], Answer], workers: int = 16) -> list[Answer]:
    with ThreadPoolExecutor(max_workers=min(n, workers)) as pool:
        return list(pool.map(call, range(n)))


def seed(**changes: Any) -> Json:
    spec = copy.deepcopy(SEED_SPEC)
    spec.update(changes)
    return spec


def wide_csv(columns: int, rows: int = 2) -> bytes:
    header = ",".join(f"c{i}" for i in range(columns - 1)) + ",label"
    line = ",".join("1" for _ in range(columns - 1)) + ",0"
    return "\n".join([header, *([line] * rows)]).encode()


# -- the cases ---------------------------------------------------------------------------------


def csv_header(stack: Stack, size: Size, figures: Figures) -> None:
    """60,000 columns (a 650 KB header) cost one pass: 422 at once, every time."""
    body = wide_csv(60_000, rows=0)
    answers = in_parallel(
        size.uploads,
        lambda _: figures.record(
            stack.request(
                "POST",
                "/v1/datasets?label=label",
                data=body,
                headers={"Content-Type": "text/csv"},
            )
        ),
    )
    figures.expect(all(a.status == 422 for a in answers), "not all 422")
    figures.notes = f"{len(body) / 1024:.0f} KB header each"


def csv_uploads(stack: Stack, size: Size, figures: Figures) -> None:
    """Wide 209 KB uploads in parallel: refused (too many columns) without holding the API."""
    body = wide_csv(19_000, rows=1)[: 209 * 1024]
    answers = in_parallel(
        size.uploads,
        lambda _: figures.record(
            stack.request(
                "POST", "/v1/datasets?label=c0", data=body, headers={"Content-Type": "text/csv"}
            )
        ),
    )
    figures.expect(all(400 <= a.status < 500 for a in answers), "not all 4xx")


def huge_network(stack: Stack, size: Size, figures: Figures) -> None:
    """4.4 million parameters x 100,000 rows x 5,000 epochs at batch size 1: refused by cost."""
    spec = seed(epochs=5000, batch_size=1)
    spec["dataset"]["params"].update(n_samples=100_000, n_features=1000)
    spec["layers"][0]["units"] = 4096
    spec["layers"][3]["units"] = 64
    for query in ("?dry_run=true", ""):
        answer = figures.record(stack.request("POST", "/v1/jobs" + query, json_body=spec))
        figures.expect(answer.status == 422, f"{query or 'submit'}: {answer.status}")
        if answer.status == 422:
            figures.notes = answer.json()["error"]["message"][:90]


def huge_dataset(stack: Stack, size: Size, figures: Figures) -> None:
    """A generated 1,000,000 x 10,000 dataset (75 GiB as float64): refused by the dry run."""
    spec = seed(epochs=1)
    spec["dataset"]["params"].update(n_samples=1_000_000, n_features=10_000)
    spec["layers"][0]["units"] = 8
    answer = figures.record(stack.request("POST", "/v1/jobs?dry_run=true", json_body=spec))
    figures.expect(answer.status == 422, f"answered {answer.status}")
    if answer.status == 422:
        figures.notes = answer.json()["error"]["message"][:80]


def queue_flood(stack: Stack, size: Size, figures: Figures) -> None:
    """One tenant queues many short jobs; another's job starts within two job lengths."""
    in_parallel(
        size.flood,
        lambda _: figures.record(stack.request("POST", "/v1/jobs", json_body=HALF_SECOND_SPEC)),
    )
    deadline = time.monotonic() + 120
    while True:  # the flood is being worked through
        done = stack.request("GET", "/v1/jobs?status=succeeded&limit=100").json()["items"]
        if len(done) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lengths = [_seconds(j["finished_at"], j["started_at"]) for j in done]
    length = statistics.median(lengths) if lengths else float("nan")
    bob = figures.record(
        stack.request("POST", "/v1/jobs", tenant="bob", json_body=HALF_SECOND_SPEC)
    ).json()
    while True:
        job = stack.request("GET", f"/v1/jobs/{bob['id']}", tenant="bob").json()
        if job["started_at"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    waited = _seconds(job["started_at"], job["created_at"]) if job["started_at"] else None
    figures.expect(waited is not None and waited <= 2 * length + 0.5, f"bob waited {waited}")
    refused = figures.statuses.get(429, 0)
    figures.notes = (
        f"bob's job started after {waited if waited is None else round(waited, 2)} s, one job "
        f"takes {length:.2f} s; {refused} over TENANT_MAX_QUEUED answered 429"
    )
    _cancel_all(stack, "alice", figures)


def strings_as_numbers(stack: Stack, size: Size, figures: Figures) -> None:
    """`"units": "64"`, `true` as a number, a predict row of strings: 422 each."""
    for value in ("64", True, 64.5):
        spec = seed()
        spec["layers"][0]["units"] = value
        answer = figures.record(stack.request("POST", "/v1/jobs?dry_run=true", json_body=spec))
        figures.expect(answer.status == 422, f"units={value!r}: {answer.status}")


def cancel_long_epoch(stack: Stack, size: Size, figures: Figures) -> None:
    """A job whose one epoch takes minutes is cancelled within about a second."""
    spec = seed(epochs=1, batch_size=1)
    spec["dataset"]["params"]["n_samples"] = 200_000
    job = figures.record(stack.request("POST", "/v1/jobs", json_body=spec)).json()
    deadline = time.monotonic() + 60
    while stack.request("GET", f"/v1/jobs/{job['id']}").json()["status"] != "running":
        if time.monotonic() > deadline:
            figures.problems.append("never started")
            return
        time.sleep(0.1)
    time.sleep(1.0)
    figures.record(stack.request("POST", f"/v1/jobs/{job['id']}/cancel"))
    asked = time.monotonic()
    while True:
        state = stack.request("GET", f"/v1/jobs/{job['id']}").json()
        if state["status"] != "running" or time.monotonic() - asked > 30:
            break
        time.sleep(0.05)
    took = time.monotonic() - asked
    figures.expect(state["status"] == "cancelled" and took < 3, f"{state['status']} after {took}")
    figures.notes = f"cancelled {took:.2f} s after the request, mid-epoch"


def nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


def deep_json(stack: Stack, size: Size, figures: Figures) -> None:
    """JSON nested 1,000 deep to submit and predict: 400 saying so, no RecursionError."""
    for path in ("/v1/jobs", "/v1/jobs?dry_run=true", "/v1/models/none/predict"):
        answer = figures.record(
            stack.request(
                "POST", path, data=nested(1000), headers={"Content-Type": "application/json"}
            )
        )
        figures.expect(answer.status == 400, f"{path}: {answer.status}")


def bad_queries(stack: Stack, size: Size, figures: Figures) -> None:
    """`?limit=²` (a digit to isdigit(), not to int()), and other bad query strings: 422."""
    # A cursor past any id, yet under gunicorn's 4,094-byte request line (past it, gunicorn
    # itself answers 414 before the app sees the request).
    for query in ("limit=²", "limit=-1", "limit=1e3", "status=lost", "cursor=" + "x" * 2000):
        sent = urllib.parse.quote(query, safe="=")  # a URL is ASCII: ² goes as %C2%B2
        answer = figures.record(stack.request("GET", f"/v1/jobs?{sent}"))
        figures.expect(answer.status == 422, f"?{query[:20]}: {answer.status}")
    answer = figures.record(stack.request("POST", "/v1/jobs?dry_run=maybe", json_body=seed()))
    figures.expect(answer.status == 422, f"dry_run=maybe: {answer.status}")


def nul_and_long_strings(stack: Stack, size: Size, figures: Figures) -> None:
    """A NUL or an over-long string in ids, cursors, names, labels, CSV headers: 422, not 500."""
    for path in ("/v1/jobs/a%00b", "/v1/models/a%00b", "/v1/datasets/a%00b", "/v1/jobs?cursor=%00"):
        answer = figures.record(stack.request("GET", path))
        figures.expect(answer.status in (404, 422), f"{path}: {answer.status}")
    spec = seed(name="a\x00b")
    figures.expect(
        figures.record(stack.request("POST", "/v1/jobs", json_body=spec)).status == 422,
        "NUL in a job name",
    )
    csv = b"a,b,label\n1,2,0\n3,4,1\n"
    for query in ("label=label&name=a%00b", "label=" + "l" * 300, "label=a%00b"):
        answer = figures.record(
            stack.request(
                "POST", f"/v1/datasets?{query}", data=csv, headers={"Content-Type": "text/csv"}
            )
        )
        figures.expect(answer.status == 422, f"?{query[:20]}: {answer.status}")
    header = b"a\x00,b,label\n1,2,0\n3,4,1\n"
    answer = figures.record(
        stack.request(
            "POST", "/v1/datasets?label=label", data=header, headers={"Content-Type": "text/csv"}
        )
    )
    figures.expect(answer.status == 422, f"NUL in a CSV header: {answer.status}")


def predict_overflow(stack: Stack, size: Size, figures: Figures) -> None:
    """A row of 1e308 never answers a fake class: 422 naming the row (the model must exist)."""
    job = figures.record(stack.request("POST", "/v1/jobs", json_body=seed(epochs=2))).json()
    deadline = time.monotonic() + 60
    while True:
        state = stack.request("GET", f"/v1/jobs/{job['id']}").json()
        if state["status"] != "queued" and state["status"] != "running":
            break
        figures.expect(time.monotonic() < deadline, "the job did not finish")
        time.sleep(0.1)
    rows = {"instances": [[1e308] * 20, [0.0] * 20]}
    answer = figures.record(
        stack.request("POST", f"/v1/models/{state['model_id']}/predict", json_body=rows)
    )
    figures.expect(answer.status == 422, f"answered {answer.status}")
    strings = {"instances": [["1"] * 20]}
    answer = figures.record(
        stack.request("POST", f"/v1/models/{state['model_id']}/predict", json_body=strings)
    )
    figures.expect(answer.status == 422, f"strings: {answer.status}")


def wrong_keys(stack: Stack, size: Size, figures: Figures) -> None:
    """Wrong keys from one address: 401, then 429 with Retry-After once over the documented rate."""
    for i in range(size.wrong_keys):
        answer = figures.record(
            stack.request("GET", "/v1/jobs", tenant=None, headers={"Authorization": f"Bearer k{i}"})
        )
        figures.expect(answer.status in (401, 429), f"key {i}: {answer.status}")
    figures.expect(figures.statuses.get(429, 0) > 0, "never throttled")
    ok = stack.request("GET", "/v1/jobs", tenant="bob")
    figures.notes = f"a good key from the same address then answered {ok.status}"


class Browser:
    """A dashboard user: a cookie jar, the CSRF token, forms posted like a browser posts them."""

    TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )
        self.token = ""

    def get(self, path: str) -> Answer:
        answer = self.send(urllib.request.Request(self.stack.url + path))
        if match := self.TOKEN.search(answer.body.decode(errors="replace")):
            self.token = match.group(1)
        return answer

    def post(self, path: str, form: dict[str, str]) -> Answer:
        data = urllib.parse.urlencode({**form, "csrf_token": self.token}).encode()
        return self.send(urllib.request.Request(self.stack.url + path, data=data, method="POST"))

    def send(self, request: urllib.request.Request) -> Answer:
        started = time.monotonic()
        try:
            with self.opener.open(request, timeout=60) as response:
                body, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        return Answer(status, time.monotonic() - started, body)

    def sign_in(self, tenant: str = "alice") -> Answer:
        self.get("/ui/login")
        answer = self.post("/ui/login", {"api_key": KEYS[tenant]})
        self.get("/")
        return answer


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer of its own (303 to the login page, say)


def dashboard_forms(stack: Stack, size: Size, figures: Figures) -> None:
    """The dashboard's forms: JSON nested 1,000 deep and a 4,301-digit number are 4xx."""
    browser = Browser(stack)
    figures.record(browser.sign_in())
    for text in (nested(1000).decode(), '{"epochs": ' + "9" * 4301 + "}"):
        answer = figures.record(browser.post("/ui/jobs/new", {"spec": text, "action": "check"}))
        figures.expect(400 <= answer.status < 500, f"{text[:12]}…: {answer.status}")


def sign_out_replay(stack: Stack, size: Size, figures: Figures) -> None:
    """After signing out, the old session cookie is signed out too (it is ended on the server)."""
    browser = Browser(stack)
    figures.record(browser.sign_in())
    cookies = list(browser.jar)
    figures.expect(figures.record(browser.get("/")).status == 200, "not signed in")
    figures.record(browser.post("/ui/logout", {}))
    replay = Browser(stack)
    for cookie in cookies:
        replay.jar.set_cookie(cookie)
    answer = figures.record(replay.get("/"))
    figures.expect(answer.status in (302, 303, 401), f"the old cookie answered {answer.status}")
    figures.notes = f"the old cookie after sign-out answered {answer.status}"


CASES: dict[str, Callable[[Stack, Size, Figures], None]] = {
    "dashboard forms": dashboard_forms,
    "sign-out replay": sign_out_replay,
    "deep json": deep_json,
    "bad query strings": bad_queries,
    "nul and long strings": nul_and_long_strings,
    "predict overflow": predict_overflow,
    "csv header 60k columns": csv_header,
    "wide csv uploads": csv_uploads,
    "huge network": huge_network,
    "huge dataset": huge_dataset,
    "queue flood": queue_flood,
    "strings as numbers": strings_as_numbers,
    "cancel a long epoch": cancel_long_epoch,
    "wrong keys": wrong_keys,  # last: it may throttle this address for a minute
}


def _seconds(later: str, earlier: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def _cancel_all(stack: Stack, tenant: str, figures: Figures) -> None:
    """Cancel the tenant's waiting jobs (the flood is not needed once measured)."""
    while True:
        page = stack.request("GET", "/v1/jobs?status=queued&limit=100", tenant=tenant).json()
        ids = [job["id"] for job in page["items"]]
        if not ids:
            return
        in_parallel(len(ids), partial(_cancel, stack, ids, tenant))


def _cancel(stack: Stack, ids: list[str], tenant: str, i: int) -> Answer:
    return stack.request("POST", f"/v1/jobs/{ids[i]}/cancel", tenant=tenant)


def run_case(stack: Stack, name: str, size: Size) -> Figures:
    figures = Figures(name, stack.database)
    with other_tenant(stack, figures):
        try:
            CASES[name](stack, size, figures)
        except Exception as exc:  # a case that breaks is a failed case, with its reason
            figures.problems.append(f"{type(exc).__name__}: {exc}")
    return figures


@contextmanager
def stack_for(database: str, **env: str) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as cleanup:
        yield Stack(Path(tmp), database, cleanup, **env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.abuse")
    parser.add_argument("--short", action="store_true", help="the short form, as make test runs")
    parser.add_argument("--case", action="append", help="only these cases (repeatable)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    size = Size.short() if args.short else Size.full()
    ok = True
    if not args.case:  # open streams: their own stack (tests/streams.py), at this size
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as cleanup:
            opened = streams.run(size.streams, Path(tmp), cleanup)
        slow = [path for path, p in opened["probes"].items() if p["p99_ms"] > 100]
        streams_ok = opened["complete"] == opened["streams"] and not slow
        print(f"{'ok  ' if streams_ok else 'FAIL'} {streams.figures_line(opened)}", flush=True)
        ok = ok and streams_ok
    for database in ("sqlite", "postgresql"):
        try:
            with stack_for(database) as stack:
                for name in args.case or CASES:
                    figures = run_case(stack, name, size)
                    print(figures.line(), flush=True)
                    ok = ok and figures.ok
        except LookupError as exc:
            print(f"skip [{database}]: {exc}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
