"""/v1/sweeps: submit, list, read, plot, events, cancel."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, url_for
from flask.typing import ResponseReturnValue

from core.settings import Settings
from service import plots, sweep_events, sweeps
from service.api.common import flag, json_body, paging, png_response, session, tenant
from service.params import JobFilter, query
from service.schemas import SweepList

bp = Blueprint("sweeps", __name__, url_prefix="/v1/sweeps")


@bp.before_request
def _authenticate() -> None:
    tenant()


@bp.post("")
def submit() -> ResponseReturnValue:
    payload = json_body()
    settings: Settings = current_app.config["TRAINSVC_SETTINGS"]
    if flag("dry_run"):
        checked = sweeps.check_sweep(
            payload, session=session(), tenant_id=tenant(), settings=settings
        )
        return jsonify(checked.dump())
    sweep = sweeps.submit_sweep(payload, session=session(), tenant_id=tenant(), settings=settings)
    location = url_for("sweeps.read", sweep_id=sweep.id)
    body = sweeps.sweep_out(sweep, session=session()).dump()
    return jsonify(body), 202, {"Location": location}


@bp.get("")
def index() -> ResponseReturnValue:
    filters = query(JobFilter)
    items, next_cursor = sweeps.list_sweeps(status=filters.status, **paging(filters))
    return jsonify(
        SweepList(
            items=[sweeps.sweep_out(s, session=session(), board=False) for s in items],
            next_cursor=next_cursor,
        ).dump()
    )


@bp.get("/<sweep_id>")
def read(sweep_id: str) -> ResponseReturnValue:
    sweep = sweeps.get_sweep(sweep_id, session=session(), tenant_id=tenant())
    return jsonify(sweeps.sweep_out(sweep, session=session()).dump())


@bp.get("/<sweep_id>/plot.png")
def plot(sweep_id: str) -> ResponseReturnValue:
    sweep = sweeps.get_sweep(sweep_id, session=session(), tenant_id=tenant())
    etag, png, final = plots.sweep_plot(
        sweep, session=session(), cache=current_app.extensions["trainsvc.plots"]
    )
    return png_response(etag, png, final=final)


@bp.get("/<sweep_id>/events")
def stream(sweep_id: str) -> ResponseReturnValue:
    return sweep_events.stream_response(
        current_app.extensions["trainsvc.events"],
        sweep_id,
        tenant(),
        max_seconds=current_app.config["EVENTS_MAX_SECONDS"],
        keepalive_seconds=current_app.config["EVENTS_HEARTBEAT_SECONDS"],
    )


@bp.post("/<sweep_id>/cancel")
def cancel(sweep_id: str) -> ResponseReturnValue:
    sweep = sweeps.cancel_sweep(sweep_id, session=session(), tenant_id=tenant())
    return jsonify(sweeps.sweep_out(sweep, session=session()).dump()), 202
