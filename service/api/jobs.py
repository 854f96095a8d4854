"""/v1/jobs: submit, list, read, metrics, plot, events, cancel."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from core.models import Job
from core.settings import Settings
from core.spec import SpecError, parse_spec
from core.uploads import info_lookup
from core.warmstart import model_lookup
from service import events, jobs, plots
from service.api.common import db, flag, json_body, paging, png_response, session, tenant
from service.errors import ApiError
from service.params import JobFilter, query
from service.schemas import DryRun, JobList, JobOut, Metrics

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@bp.before_request
def _authenticate() -> None:
    tenant()


@bp.post("")
def submit() -> ResponseReturnValue:
    payload = json_body()
    try:
        lookups = info_lookup(session(), tenant()), model_lookup(session(), tenant())
        spec = parse_spec(payload, *lookups)
    except SpecError as exc:
        raise ApiError(422, str(exc), code="invalid_spec", details=exc.details) from None
    settings: Settings = current_app.config["TRAINSVC_SETTINGS"]
    if flag("dry_run"):
        cost = jobs.admit(spec, session=session(), settings=settings)
        return jsonify(DryRun.from_spec(spec, cost).dump())
    key = request.headers.get("Idempotency-Key")  # its length checked before any view
    idempotency = None if key is None else (key, jobs.request_hash(payload))
    job = jobs.submit_job(
        spec,
        session=session(),
        tenant_id=tenant(),
        db=db(),
        queue=current_app.extensions["trainsvc.queue"],
        settings=settings,
        idempotency=idempotency,
    )
    location = url_for("jobs.read", job_id=job.id)
    return jsonify(JobOut.from_row(job).dump()), 202, {"Location": location}


@bp.get("")
def index() -> ResponseReturnValue:
    filters = query(JobFilter)
    items, next_cursor = jobs.list_jobs(status=filters.status, **paging(filters))
    return jsonify(
        JobList(items=[JobOut.from_row(j) for j in items], next_cursor=next_cursor).dump()
    )


@bp.get("/<job_id>")
def read(job_id: str) -> ResponseReturnValue:
    job = jobs.get_job(job_id, session=session(), tenant_id=tenant())
    return jsonify(JobOut.from_row(job).dump())


@bp.get("/<job_id>/metrics")
def metrics(job_id: str) -> ResponseReturnValue:
    job = jobs.get_job(job_id, session=session(), tenant_id=tenant())
    history = jobs.job_history(job, session=session())
    return jsonify(Metrics(job_id=job.id, history=history).dump())


@bp.get("/<job_id>/plot.png")
def plot(job_id: str) -> ResponseReturnValue:
    job = jobs.get_job(job_id, session=session(), tenant_id=tenant())
    return plot_response(job)


def plot_response(job: Job) -> ResponseReturnValue:
    """The job's learning curves as PNG; cacheable once the job has finished."""
    etag, png, final = plots.job_plot(
        job, session=session(), cache=current_app.extensions["trainsvc.plots"]
    )
    return png_response(etag, png, final=final)


@bp.get("/<job_id>/events")
def stream(job_id: str) -> ResponseReturnValue:
    return events_response(job_id, tenant())


def events_response(job_id: str, tenant_id: str) -> Response:
    """The job's Server-Sent Events, fed by this process's hub; 404, or 429 past the cap."""
    return events.stream_response(
        current_app.extensions["trainsvc.events"],
        job_id,
        tenant_id,
        resume=(request.args.get("after"), request.headers.get("Last-Event-ID")),
        max_seconds=current_app.config["EVENTS_MAX_SECONDS"],
        keepalive_seconds=current_app.config["EVENTS_HEARTBEAT_SECONDS"],
    )


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    job = jobs.cancel_job(job_id, session=session(), tenant_id=tenant())
    return jsonify(JobOut.from_row(job).dump()), 202
