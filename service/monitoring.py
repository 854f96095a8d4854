"""Prometheus metrics: request and predict latency from the API processes, job figures from SQL.

Job counts, training time and queue depth are read at scrape time from the database and the
broker, so they are right however many workers (on however many machines) write them. Request
metrics live in each API process; under gunicorn, `PROMETHEUS_MULTIPROC_DIR` (set by `make run`
and the compose file) lets one scrape see every worker process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from core.db import Database
from core.models import JOB_STATUSES, TERMINAL_STATUSES, Job

log = logging.getLogger(__name__)

# Created once per process, outside any registry: each app's registry collects them.
PREDICT_SECONDS = Histogram(
    "trainsvc_predict_latency_seconds",
    "Time to answer POST /v1/models/{id}/predict, model loading included",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=None,
)
REQUESTS = Counter(
    "trainsvc_http_requests",
    "HTTP requests answered, by route and status code",
    ["method", "route", "status"],
    registry=None,
)
TRAIN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)


class StoreCollector(Collector):
    """Job counts by status, training-time histogram and queue depth, read when scraped."""

    def __init__(self, database: Database, broker_url: str, queue_name: str) -> None:
        self.database = database
        self.broker_url = broker_url
        self.queue_name = queue_name

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily("trainsvc_jobs", "Jobs by status", labels=["status"])
        seconds = HistogramMetricFamily(
            "trainsvc_job_train_seconds",
            "Wall time of each job a worker ran to its end, by final status",
            labels=["status"],
        )
        with self.database.session() as session:
            query = select(Job.status, func.count()).group_by(Job.status)
            counts = {status: n for status, n in session.execute(query)}
            for status in JOB_STATUSES:
                jobs.add_metric([status], counts.get(status, 0))
            done = Job.train_seconds.is_not(None)
            columns = [
                func.sum(case((Job.train_seconds <= bound, 1), else_=0)) for bound in TRAIN_BUCKETS
            ]
            timed = (
                select(Job.status, func.count(), func.sum(Job.train_seconds), *columns)
                .where(done)
                .group_by(Job.status)
            )
            by_status = {row[0]: tuple(row[1:]) for row in session.execute(timed)}
        for status in sorted(TERMINAL_STATUSES):
            empty = (0, 0.0, *[0] * len(TRAIN_BUCKETS))
            total, total_seconds, *cumulative = by_status.get(status, empty)
            buckets = [
                (str(float(b)), int(c or 0)) for b, c in zip(TRAIN_BUCKETS, cumulative, strict=True)
            ]
            buckets.append(("+Inf", int(total)))
            seconds.add_metric([status], buckets, float(total_seconds or 0.0))
        yield jobs
        yield seconds
        yield from self._queue()

    def _queue(self) -> Iterator[Any]:
        up = GaugeMetricFamily("trainsvc_broker_up", "1 if the broker answered this scrape")
        if not self.broker_url.startswith(("redis://", "rediss://")):
            return  # the embedded broker of `make run`: no queue to measure
        try:
            client = redis.Redis.from_url(
                self.broker_url, socket_connect_timeout=1, socket_timeout=1
            )
            waiting = int(client.llen(self.queue_name))
        except redis.RedisError as exc:
            log.warning("queue depth unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "trainsvc_queue_depth", "Messages waiting in the broker's training queue"
        )
        depth.add_metric([], waiting)
        yield depth


def make_registry(
    database: Database, broker_url: str, queue_name: str, *, multiprocess: bool = False
) -> CollectorRegistry:
    """A registry for one app: this process's metrics, or (`multiprocess`, with
    PROMETHEUS_MULTIPROC_DIR set) all gunicorn workers' metrics; plus the store's."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess:
        MultiProcessCollector(registry)
    else:
        registry.register(PREDICT_SECONDS)
        registry.register(REQUESTS)
    registry.register(StoreCollector(database, broker_url, queue_name))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
