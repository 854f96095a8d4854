"""The Flask application factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from core.db import Database
from core.settings import Settings
from service import dashboard, ui_auth
from service.api import datasets, docs, health, jobs, metrics, models, registry, sweeps, v2
from service.api.common import close_session
from service.auth import KeyCache
from service.errors import register_error_handlers
from service.hub import Hub
from service.jsonutil import FiniteJSONProvider, JSONRequest
from service.monitoring import make_registry
from service.params import check_request
from service.plots import PlotCache
from service.predictions import ModelCache
from service.queue import CeleryQueue, JobQueue
from service.ratelimit import make_rate_limiter
from service.registry import ResolveCache
from service.streamcap import make_stream_cap


class App(Flask):
    """Flask, asking once per view or hook whether it is a coroutine function. Flask asks
    `inspect` on every call, five times a request here (hooks, view, teardown): a few
    microseconds of each prediction."""

    def __init__(self, import_name: str) -> None:
        super().__init__(import_name)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        sync = self._sync.get(func)
        if sync is None:
            sync = self._sync[func] = super().ensure_sync(func)
        return sync


def create_app(settings: Settings | None = None, queue: JobQueue | None = None) -> Flask:
    """Build the API. Settings default to the environment; nothing connects until a request."""
    settings = settings or Settings.from_env()
    app = App(__name__)
    app.request_class = JSONRequest
    app.json_provider_class = FiniteJSONProvider
    app.json = FiniteJSONProvider(app)
    if settings.trusted_proxies:
        # The client address (and scheme) from X-Forwarded-For/-Proto, as set by that many
        # proxies in front; never trusted otherwise, since any client can send those headers.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        MAX_PREDICT_ROWS=settings.max_predict_rows,
        EVENTS_MAX_SECONDS=settings.events_max_seconds or None,
        EVENTS_HEARTBEAT_SECONDS=settings.events_heartbeat_seconds,
        TRAINSVC_SETTINGS=settings,
    )
    database = Database(settings.database_url, settings.database_timeout_seconds)
    app.extensions["trainsvc.db"] = database
    app.extensions["trainsvc.queue"] = queue or CeleryQueue(settings)
    app.extensions["trainsvc.models"] = ModelCache(settings.model_cache_size)
    app.extensions["trainsvc.keys"] = KeyCache()
    app.extensions["trainsvc.registry"] = ResolveCache(settings.registry_cache_seconds)
    app.extensions["trainsvc.plots"] = PlotCache()
    app.extensions["trainsvc.events"] = Hub(
        app.extensions["trainsvc.db"],
        make_stream_cap(
            settings.effective_broker_url, settings.events_max_per_tenant, settings.queue_name
        ),
        settings.events_poll_seconds,
    )
    app.extensions["trainsvc.ratelimit"] = make_rate_limiter(
        settings.effective_broker_url, settings.rate_limit_per_minute, settings.rate_limit_lease
    )
    app.extensions["trainsvc.auth_failures"] = make_rate_limiter(
        settings.effective_broker_url,
        settings.auth_failures_per_minute,
        clean_seconds=settings.auth_clean_seconds,
    )
    # Its key for an address is this prefix and the address (service.auth._failures).
    app.extensions["trainsvc.auth_failures.prefix"] = f"auth-failures:{settings.queue_name}:"
    app.before_request(check_request)  # path ids and stored headers, before any view
    app.teardown_appcontext(close_session)
    register_error_handlers(app)
    app.extensions["trainsvc.metrics"] = make_registry(
        app.extensions["trainsvc.db"],
        settings.effective_broker_url,
        settings.queue_name,
        multiprocess=bool(settings.prometheus_multiproc_dir),
    )
    app.after_request(metrics.count_request)
    ui_auth.configure(app, settings.secret_key, secure=settings.cookie_secure)
    for blueprint in (health.bp, docs.bp, jobs.bp, sweeps.bp, models.bp, datasets.bp, metrics.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(registry.bp)  # /v1/registered-models
    app.register_blueprint(v2.bp)  # the Open Inference Protocol
    app.register_blueprint(dashboard.bp)  # the pages at / and /ui/, signed in by cookie
    return app
