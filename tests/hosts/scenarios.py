"""The failure scenarios over several hosts; each returns one line of figures.

Sizes: `make hosts` runs them full size (tests/hosts/__main__.py), `make test` short
(tests/hosts/test_hosts.py). Every scenario deploys afresh on the shared cluster: its own
database on the data host's PostgreSQL, its own queue, its own API and workers.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.hosts.cluster import (
    PG_PROXY_PORT,
    REDIS_PROXY_PORT,
    Cluster,
    Deployment,
    WorkerHost,
    job_spec,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
SKEW_HOOK = "CLOCK_SKEW_SECONDS"


def endings(final: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How the jobs ended: `succeeded`, or the failure's code."""
    out: dict[str, int] = {}
    for job in final.values():
        key = (
            job["status"]
            if job["status"] == "succeeded"
            else (job.get("error") or {}).get("code", job["status"])
        )
        out[key] = out.get(key, 0) + 1
    return out


def claimed_ids(worker: WorkerHost) -> list[str]:
    """The job ids this worker claimed, in order (from its JSON log)."""
    ids: list[str] = []
    for line in worker.process.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and " claimed (attempt " in str(entry.get("message", "")):
            ids.append(str(entry["message"].split()[1]))
    return ids


def both_hosts(cluster: Cluster, tmp: Path, cleanup: ExitStack, jobs: int = 40) -> dict[str, Any]:
    """Jobs over both worker hosts: both train, every job ends once."""
    d = Deployment(cluster, tmp, cleanup)
    d.start_api(wait=False)
    d.start_workers()
    start = time.monotonic()
    ids = [d.client.submit(job_spec(rows=1000, epochs=10, name=f"job-{i}")) for i in range(jobs)]
    final = d.client.wait_all(ids, timeout=60 + 6 * jobs)
    claims = {host: w.claimed() for host, w in d.workers.items()}
    return d.figures(
        "both worker hosts",
        ids,
        final,
        None,
        claims=claims,
        attempts_over_1=sum(1 for j in final.values() if j["attempts"] > 1),
        drain_s=round(time.monotonic() - start, 1),
        endings=endings(final),
    )


def worker_host_cut(
    cluster: Cluster, tmp: Path, cleanup: ExitStack, jobs: int = 8, cut_seconds: float = 9
) -> dict[str, Any]:
    """Worker host w1 cut off mid-training for longer than the staleness window, then healed.

    Its workers keep their database connections through the cut (DATABASE_TIMEOUT_SECONDS
    longer than the cut), so their writes arrive late, after w2 took the job over: the attempt
    fence must refuse them. Then w1 must go on working.
    """
    d = Deployment(cluster, tmp, cleanup, env={"DATABASE_TIMEOUT_SECONDS": "30"})
    d.start_api(wait=False)
    d.start_workers()
    w1 = d.workers["w1"]
    ids = [d.client.submit(job_spec(rows=3000, epochs=40, name=f"job-{i}")) for i in range(jobs)]

    def w1_training() -> bool:
        mine = claimed_ids(w1)
        if not mine:
            return False
        job = d.client.job(mine[-1])
        return bool(job and job["status"] == "running" and job["progress"]["epoch"] >= 2)

    wait_for(w1_training, 60, "w1 training a job")
    victim = claimed_ids(w1)[-1]
    cluster.net.cut("w1")
    cut_at = time.monotonic()
    try:
        takeover = wait_for(
            lambda: (j := d.client.job(victim)) is not None and j["attempts"] >= 2,
            60,
            "the cut-off host's job taken over",
        )
        time.sleep(max(0.0, cut_seconds - (time.monotonic() - cut_at)))
    finally:
        cluster.net.heal("w1")
    healed_at = time.monotonic()
    claims_at_heal = w1.claimed()
    d.client.wait_all(ids, timeout=240)
    # Work submitted after the heal, two jobs at a time until the healed host has taken one:
    # it must go on working (w2 alone would take them all if w1 were stuck).
    more: list[str] = []
    deadline = time.monotonic() + 90
    while w1.claimed() == claims_at_heal and time.monotonic() < deadline:
        spec = job_spec(rows=1500, epochs=15)
        more += [d.client.submit({**spec, "name": f"after-{len(more) + i}"}) for i in range(2)]
        d.client.wait_all(more, timeout=60)
    if w1.claimed() == claims_at_heal:
        tail = "\n".join(w1.process.log().splitlines()[-30:])
        raise AssertionError(f"the healed host took no job after {len(more)} more:\n{tail}")
    final = d.client.wait_all(ids + more, timeout=60)
    fenced = w1.count("was superseded")
    victim_job = final[victim]
    history = d.client.request("GET", f"/v1/jobs/{victim}/metrics")
    epochs = [row["epoch"] for row in history.json()["history"]] if history is not None else []
    return d.figures(
        "worker host cut off, healed",
        ids + more,
        final,
        takeover,
        cut_s=round(healed_at - cut_at, 1),
        victim_attempts=victim_job["attempts"],
        victim_status=victim_job["status"],
        victim_epochs_once=epochs == list(range(1, len(epochs) + 1)) and len(epochs) == 40,
        late_writes_fenced=fenced,
        w1_lost_db=w1.count("lost the database"),
        w1_claims_after_heal=w1.claimed() - claims_at_heal,
        claims={host: w.claimed() for host, w in d.workers.items()},
        requeued_by={host: w.count("queued again") for host, w in d.workers.items()},
    )


def data_restarts(cluster: Cluster, tmp: Path, cleanup: ExitStack, jobs: int = 6) -> dict[str, Any]:
    """The data host's Redis killed and restarted, then its PostgreSQL, while jobs train."""
    d = Deployment(cluster, tmp, cleanup)
    d.start_api(wait=False)
    d.start_workers()
    ids = [d.client.submit(job_spec(rows=3000, epochs=40, name=f"job-{i}")) for i in range(jobs)]
    wait_for(
        lambda: (
            sum((j := d.client.job(i)) is not None and j["status"] == "running" for i in ids) >= 2
        ),
        60,
        "jobs training",
    )
    # Redis: every message in it is lost; the API still takes jobs (the database holds them).
    cluster.data.kill_redis()
    during_redis: dict[int, int] = {}
    for i in range(3):
        response = d.client.request("POST", "/v1/jobs", json=job_spec(500, 5, f"during-redis-{i}"))
        code = response.status_code if response is not None else 0
        during_redis[code] = during_redis.get(code, 0) + 1
        if response is not None and response.status_code == 202:
            ids.append(response.json()["id"])
        time.sleep(1)
    cluster.data.start_redis()
    # PostgreSQL: what needs the database answers 503 (JSON, Retry-After) at once, never hangs.
    wait_for(
        lambda: any((j := d.client.job(i)) is not None and j["status"] == "running" for i in ids),
        60,
        "jobs training again",
    )
    cluster.data.stop_postgres()
    down_at = time.monotonic()
    during_pg: dict[int, int] = {}
    slowest = 0.0
    while time.monotonic() - down_at < 5:
        started = time.monotonic()
        response = d.client.request("GET", f"/v1/jobs/{ids[0]}")
        slowest = max(slowest, time.monotonic() - started)
        code = response.status_code if response is not None else 0
        during_pg[code] = during_pg.get(code, 0) + 1
        time.sleep(0.3)
    cluster.data.start_postgres()
    up_at = time.monotonic()
    recover = wait_for(lambda: d.client.job(ids[0]) is not None, 30, "the API answering again")
    final = d.client.wait_all(ids, timeout=240)
    reasons = sorted(
        {j["status"] if j["status"] == "succeeded" else (j["error"] or {}).get("code", "?")
         for j in final.values()}
    )  # fmt: skip
    return d.figures(
        "data host's Redis, then PostgreSQL, restarted",
        ids,
        final,
        recover,
        during_redis=during_redis,
        during_pg=during_pg,
        slowest_answer_while_pg_down_s=round(slowest, 2),
        pg_restart_s=round(up_at - down_at, 1),
        endings=reasons,
        without_reason=sum(
            1 for j in final.values() if j["status"] != "succeeded" and not j.get("error")
        ),
        attempts=sorted({j["attempts"] for j in final.values()}),
        broker_reconnects=sum(
            w.count("Connection to broker lost") + w.count("Cannot connect to redis")
            for w in d.workers.values()
        ),
    )


def api_host_cut(
    cluster: Cluster, tmp: Path, cleanup: ExitStack, cut_seconds: float = 8
) -> dict[str, Any]:
    """The API host cut off from the data host: /readyz 503 within seconds, /healthz 200,
    and ready again by itself once the link is back."""
    d = Deployment(cluster, tmp, cleanup)
    d.start_api()
    wait_for(lambda: d.client.status("/readyz") == 200, 30, "/readyz 200 before the cut")
    cluster.net.cut("api")
    cut_at = time.monotonic()
    healthz: set[int | None] = set()
    try:
        not_ready = wait_for(lambda: d.client.status("/readyz") == 503, 30, "/readyz 503")
        for _ in range(3):
            healthz.add(d.client.status("/healthz"))
        started = time.monotonic()
        response = d.client.request("GET", "/v1/jobs")
        jobs_code = response.status_code if response is not None else None
        jobs_seconds = time.monotonic() - started
        time.sleep(max(0.0, cut_seconds - (time.monotonic() - cut_at)))
    finally:
        cluster.net.heal("api")
    recover = wait_for(lambda: d.client.status("/readyz") == 200, 60, "/readyz 200 after")
    after = d.client.request("GET", "/v1/jobs")
    return {
        "scenario": "API host cut off from the data host",
        "readyz_503_after_s": round(not_ready, 1),
        "healthz_during": sorted(c or 0 for c in healthz),
        "jobs_during": jobs_code,
        "jobs_answer_s": round(jobs_seconds, 1),
        "recover_s": round(recover, 1),
        "jobs_after": after.status_code if after is not None else None,
        "5xx": d.client.server_errors,
        "hangs": d.client.hangs,
    }


def lossy_path(
    cluster: Cluster,
    tmp: Path,
    cleanup: ExitStack,
    jobs: int = 20,
    cut: float = 0.02,
    epochs: int = 10,
) -> dict[str, Any]:
    """The workers reach PostgreSQL and Redis through the fault-injecting proxy (100 ms +/- 50
    per chunk, 2 % of connections cut mid-stream) during a sweep of `jobs` trials: all finish,
    none twice."""
    address = cluster.start_proxy(tmp, cleanup, cut=cut)
    # Every round trip to the data host now costs about 200 ms: the housekeeping passes (run on
    # each worker's event loop) and the epoch writes are spaced out to match.
    slow = {
        "HEARTBEAT_SECONDS": "1",
        "STALE_AFTER_SECONDS": "10",
        "REQUEUE_AFTER_SECONDS": "60",
        "DISPATCH_INTERVAL_SECONDS": "2",
        "REAP_INTERVAL_SECONDS": "2",
        "METRICS_FLUSH_SECONDS": "1",
        "DATABASE_TIMEOUT_SECONDS": "10",
    }
    d = Deployment(cluster, tmp, cleanup, env=slow)
    d.start_api(wait=False)
    database = d.env["DATABASE_URL"].replace(f"{address}:5432", f"{address}:{PG_PROXY_PORT}")
    via_proxy = {
        "DATABASE_URL": database,
        "BROKER_URL": f"redis://{address}:{REDIS_PROXY_PORT}/0",
        "REDIS_URL": f"redis://{address}:{REDIS_PROXY_PORT}/0",
    }
    d.start_workers(w1=via_proxy, w2=via_proxy)
    start = time.monotonic()
    # One sweep of `jobs` trials (a grid over the seed): its controller runs on the workers, so
    # creating each trial crosses the lossy path too.
    request = {
        "name": "lossy",
        "spec": job_spec(rows=1000, epochs=epochs),
        "space": {"seed": {"choices": list(range(jobs))}},
        "strategy": "grid",
        "objective": {"metric": "loss", "direction": "minimize"},
        "max_trials": jobs,
        "max_parallel": jobs,  # all at once, as the jobs were: the path is slow enough
    }
    sweep = d.client.wait_sweep(d.client.submit_sweep(request), timeout=120 + 20 * jobs)
    ids = [row["job_id"] for row in sweep.get("leaderboard") or []]
    final = d.client.wait_all(ids, timeout=30)
    proxy_log = cluster.proxy.log() if cluster.proxy else ""
    trials = sorted(row["trial"] for row in sweep.get("leaderboard") or [])
    return d.figures(
        "slow, lossy path to the data host (a sweep)",
        ids,
        final,
        None,
        sweep=sweep.get("status"),
        trials_once=trials == list(range(len(trials))) and len(trials) == jobs,
        drain_s=round(time.monotonic() - start, 1),
        connections_cut=proxy_log.count("\ncut ") + proxy_log.startswith("cut "),
        attempts_over_1=sum(1 for j in final.values() if j["attempts"] > 1),
        claims={host: w.claimed() for host, w in d.workers.items()},
        endings=endings(final),
    )


def clock_skew(cluster: Cluster, tmp: Path, cleanup: ExitStack, jobs: int = 10) -> dict[str, Any]:
    """Worker host w2's clock 90 s ahead (CLOCK_SKEW_SECONDS on its workers): every healthy job
    succeeds on its first attempt; a worker_lost message would name what was seen."""
    d = Deployment(cluster, tmp, cleanup)
    d.start_api(wait=False)
    d.start_workers(w2={SKEW_HOOK: "90"})
    ids = [d.client.submit(job_spec(rows=2000, epochs=20, name=f"job-{i}")) for i in range(jobs)]
    final = d.client.wait_all(ids, timeout=60 + 10 * jobs)
    lost = [
        j["error"]["message"]
        for j in final.values()
        if (j.get("error") or {}).get("code") == "worker_lost"
    ]
    return d.figures(
        "one worker host's clock 90 s ahead",
        ids,
        final,
        None,
        first_attempt=sum(
            1 for j in final.values() if j["status"] == "succeeded" and j["attempts"] == 1
        ),
        worker_lost=len(lost),
        worker_lost_message=lost[0] if lost else None,
        claims={host: w.claimed() for host, w in d.workers.items()},
    )


def problems(name: str, f: dict[str, Any]) -> list[str]:
    """What in a scenario's figures says it failed (empty: it passed); `make hosts` uses it."""
    bad = [k for k in ("lost", "duplicates", "5xx", "hangs") if f.get(k)]
    if name != "data_restarts" and f.get("succeeded", f.get("submitted")) != f.get("submitted"):
        bad.append("succeeded < submitted")
    checks = {
        "both_hosts": lambda: all(n > 0 for n in f["claims"].values()),
        "worker_host_cut": lambda: (
            f["victim_attempts"] >= 2
            and f["victim_status"] == "succeeded"
            and f["victim_epochs_once"]
            and f["late_writes_fenced"] + f["w1_lost_db"] >= 1
            and f["w1_claims_after_heal"] >= 1
        ),
        "data_restarts": lambda: f["without_reason"] == 0 and set(f["during_pg"]) == {503},
        "api_host_cut": lambda: (
            f["readyz_503_after_s"] < 10
            and f["healthz_during"] == [200]
            and f["jobs_during"] == 503
            and f["jobs_after"] == 200
        ),
        "clock_skew": lambda: f["first_attempt"] == f["submitted"] and f["worker_lost"] == 0,
        "lossy_path": lambda: f["sweep"] == "succeeded" and f["trials_once"],
    }
    if name in checks and not checks[name]():
        bad.append(f"{name} expectations")
    return bad
