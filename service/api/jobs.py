"""/v1/jobs: submit, list, read, metrics, plot, events, cancel."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from core.models import Job
from core.spec import SpecError, parse_spec
from core.uploads import info_lookup
from service import events, jobs, plots
from service.api.common import db, flag, json_body, page_limit, session, tenant
from service.errors import ApiError

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")


@bp.before_request
def _authenticate() -> None:
    tenant()


@bp.post("")
def submit() -> ResponseReturnValue:
    payload = json_body()
    try:
        spec = parse_spec(payload, info_lookup(session(), tenant()))
    except SpecError as exc:
        raise ApiError(422, str(exc), code="invalid_spec", details=exc.details) from None
    if flag("dry_run"):
        summary = spec.summary()
        shape = spec.data_shape()
        total = sum(s.params for s in summary)
        trainable = sum(s.trainable_params for s in summary)
        return jsonify(
            {
                "valid": True,
                "task": spec.task,
                "input_shape": [None, shape.n_features],
                "layers": [s.as_dict() for s in summary],
                "total_params": total,
                "trainable_params": trainable,
                "non_trainable_params": total - trainable,
            }
        )
    queue = current_app.extensions["trainsvc.queue"]
    key = request.headers.get("Idempotency-Key")
    idempotency = None
    if key is not None:
        if not 1 <= len(key) <= 200:
            raise ApiError(
                422,
                "Idempotency-Key must be 1 to 200 characters",
                details=[{"field": "Idempotency-Key", "message": "bad length"}],
            )
        idempotency = (key, jobs.request_hash(payload))
    job = jobs.create_job(
        spec, session=session(), tenant_id=tenant(), queue=queue, idempotency=idempotency
    )
    location = url_for("jobs.read", job_id=job.id)
    return jsonify(jobs.job_to_dict(job)), 202, {"Location": location}


@bp.get("")
def index() -> ResponseReturnValue:
    items, next_cursor = jobs.list_jobs(
        session=session(),
        tenant_id=tenant(),
        status=request.args.get("status") or None,
        limit=page_limit(),
        cursor=request.args.get("cursor") or None,
    )
    return jsonify({"items": [jobs.job_to_dict(j) for j in items], "next_cursor": next_cursor})


@bp.get("/<job_id>")
def read(job_id: str) -> ResponseReturnValue:
    return jsonify(jobs.job_to_dict(jobs.get_job(job_id, session=session(), tenant_id=tenant())))


@bp.get("/<job_id>/metrics")
def metrics(job_id: str) -> ResponseReturnValue:
    job = jobs.get_job(job_id, session=session(), tenant_id=tenant())
    return jsonify({"job_id": job.id, "history": jobs.job_history(job, session=session())})


@bp.get("/<job_id>/plot.png")
def plot(job_id: str) -> ResponseReturnValue:
    job = jobs.get_job(job_id, session=session(), tenant_id=tenant())
    return plot_response(job)


def plot_response(job: Job) -> ResponseReturnValue:
    """The job's learning curves as PNG; cacheable once the job has finished."""
    etag, png, final = plots.job_plot(
        job, session=session(), cache=current_app.extensions["trainsvc.plots"]
    )
    response = Response(png, mimetype="image/png")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, max-age=86400" if final else "no-cache"
    return response.make_conditional(request)


@bp.get("/<job_id>/events")
def stream(job_id: str) -> ResponseReturnValue:
    job = jobs.get_job(job_id, session=session(), tenant_id=tenant())
    return events_response(job)


def events_response(job: Job) -> Response:
    """The job's Server-Sent Events; the stream reads the database in sessions of its own."""
    after = events.resume_after(request.args.get("after"), request.headers.get("Last-Event-ID"))
    generator = events.job_events(
        db(),
        job.id,
        job.tenant_id,
        after=after,
        max_seconds=current_app.config.get("EVENTS_MAX_SECONDS"),
    )
    return events.event_stream(generator)


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    job = jobs.cancel_job(job_id, session=session(), tenant_id=tenant())
    return jsonify(jobs.job_to_dict(job)), 202
