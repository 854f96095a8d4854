"""The dashboard: server-rendered pages over the API's own job and sweep actions, signed in by
cookie."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from core import model_registry
from core.activations import ACTIVATIONS
from core.initializers import INITIALIZERS
from core.layers import LAYERS
from core.losses import LOSSES
from core.models import TERMINAL_STATUSES
from core.optimizers import OPTIMIZERS
from core.queries import NotFound
from core.settings import Settings
from core.spec import SpecError, parse_spec
from core.uploads import info_lookup
from core.warmstart import model_lookup
from service import jobs, jsonutil, sweeps, ui_auth
from service import registry as http
from service.api import sweeps as api_sweeps
from service.api.common import db, session
from service.api.jobs import events_response, plot_response
from service.api.models import evaluation_plot_response, predict_offloaded
from service.errors import ApiError, error_response, not_found
from service.params import MAX_PAGE, Cursor, SignIn, query
from service.predictions import load_predictor, model_info
from service.schemas import DryRun, JobOut, Prediction

bp = Blueprint("ui", __name__)

# The reference job, shipped inside the package (examples/seed_job.json links to it).
SEED_SPEC = Path(__file__).resolve().parent / "static" / "seed_job.json"
# Routes the page's scripts call: they answer errors as JSON, never with a redirect or a page.
DATA_ROUTES = frozenset(
    {"ui.rows", "ui.events", "ui.plot", "ui.predict", "ui.evaluation_plot"}
    | {"ui.sweep_rows", "ui.sweep_board", "ui.sweep_events", "ui.sweep_plot"}
)
OPEN_ROUTES = frozenset({"ui.login"})
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
# Under the spec editor: each field that takes a registered name, and the names (never by hand).
NAMES = (
    ("layers[].type", LAYERS),
    ("layers[].activation", ACTIVATIONS),
    ("layers[].kernel_initializer", INITIALIZERS),
    ("loss", LOSSES),
    ("optimizer.type", OPTIMIZERS),
)


@bp.before_request
def _sign_in_required() -> ResponseReturnValue | None:
    if request.method == "POST":
        ui_auth.check_csrf()
    if request.endpoint in OPEN_ROUTES:
        return None
    tenant = ui_auth.signed_in_tenant()
    if tenant is None:
        if request.endpoint in DATA_ROUTES:
            raise ApiError(401, "sign in to the dashboard first")
        return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
    g.tenant_id = tenant  # what service.api.common.tenant() answers for this request
    return None


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@bp.errorhandler(ApiError)
def _error(exc: ApiError) -> ResponseReturnValue:
    if request.endpoint in DATA_ROUTES or request.is_json:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    return render_template("error.html", error=exc), exc.status, exc.headers


@bp.errorhandler(NotFound)
def _not_found(exc: NotFound) -> ResponseReturnValue:
    return _error(not_found(exc))


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": ui_auth.csrf_token, "tenant": g.get("tenant_id")}


@bp.app_template_filter("num")
def _num(value: Any, digits: int = 4) -> str:
    """A metric for display: fixed digits, empty when missing."""
    return f"{value:.{digits}f}" if isinstance(value, int | float) else ""


@bp.app_template_filter("params")
def _params(params: dict[str, Any] | None) -> str:
    """A trial's searched values, short: `optimizer=sgd(learning_rate=0.01) seed=1`."""
    return " ".join(f"{path}={_param(value)}" for path, value in (params or {}).items())


def _param(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{k}={_param(v)}" for k, v in value.items() if k != "type")
        return f"{value['type']}({inner})" if "type" in value else "{" + inner + "}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, list) else str(value)


def _local(target: str | None) -> str:
    """`target` if it is a path on this site, else the job list (no open redirects)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("ui.index")


@bp.route("/ui/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = query(SignIn).next
    if request.method == "GET":
        return render_template("login.html")
    try:
        if ui_auth.sign_in(request.form.get("api_key", "")):
            return redirect(_local(target), 303)
    except ApiError as exc:  # 429: too many failed sign-ins from this address
        return render_template("login.html", error=exc.message), exc.status, exc.headers
    return render_template("login.html", error="That API key is not valid."), 401


@bp.post("/ui/logout")
def logout() -> ResponseReturnValue:
    ui_auth.sign_out()
    return redirect(url_for("ui.login"), 303)


def _job_page(cursor: str | None) -> dict[str, Any]:
    items, next_cursor = jobs.list_jobs(
        session=session(), tenant_id=g.tenant_id, status=None, limit=50, cursor=cursor
    )
    return {"jobs": [JobOut.from_row(j).dump() for j in items], "next_cursor": next_cursor}


@bp.get("/")
def index() -> ResponseReturnValue:
    return render_template("jobs.html", **_job_page(query(Cursor).cursor))


@bp.get("/ui/jobs/rows")
def rows() -> ResponseReturnValue:
    return render_template("_rows.html", **_job_page(query(Cursor).cursor))


def _spec_form(spec_text: str, status: int = 200, **context: Any) -> ResponseReturnValue:
    """The new-job page: the spec editor, with the registered names under it."""
    return render_template("new_job.html", spec_text=spec_text, names=NAMES, **context), status


@bp.route("/ui/jobs/new", methods=["GET", "POST"])
def new_job() -> ResponseReturnValue:
    if request.method == "GET":
        return _spec_form(SEED_SPEC.read_text() if SEED_SPEC.exists() else "{}")
    text = request.form.get("spec", "")
    try:
        lookups = info_lookup(session(), g.tenant_id), model_lookup(session(), g.tenant_id)
        spec = parse_spec(jsonutil.loads(text), *lookups)
    except jsonutil.BadJSON as exc:
        return _spec_form(text, 400, problems=[{"field": "$", "message": str(exc)}])
    except SpecError as exc:
        return _spec_form(text, 422, problems=exc.details)
    settings: Settings = current_app.config["TRAINSVC_SETTINGS"]
    try:
        if request.form.get("action") == "check":
            cost = jobs.admit(spec, session=session(), settings=settings)
            return _spec_form(text, summary=DryRun.from_spec(spec, cost).dump())
        job = jobs.submit_job(
            spec,
            session=session(),
            tenant_id=g.tenant_id,
            db=db(),
            queue=current_app.extensions["trainsvc.queue"],
            settings=settings,
        )
    except ApiError as exc:  # over a cost limit or the tenant's queued quota
        if exc.status not in (422, 429):
            raise
        problems = exc.details or [{"field": "$", "message": exc.message}]
        return _spec_form(text, exc.status, problems=problems)
    return redirect(url_for("ui.job", job_id=job.id), 303)


@bp.get("/ui/jobs/<job_id>")
def job(job_id: str) -> ResponseReturnValue:
    found = jobs.get_job(job_id, session=session(), tenant_id=g.tenant_id)
    model = None
    if found.model_id is not None:
        model = model_info(found.model_id, session=session(), tenant_id=g.tenant_id).dump()
    return render_template(
        "job.html",
        job=JobOut.from_row(found).dump(),
        model=model,
        finished=found.status in TERMINAL_STATUSES,
        registered=_registered_as(found.model_id),
        registry_names=_registry_names(),
    )


@bp.post("/ui/jobs/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    jobs.cancel_job(job_id, session=session(), tenant_id=g.tenant_id)
    return redirect(url_for("ui.job", job_id=job_id), 303)


@bp.post("/ui/jobs/<job_id>/predict")
def predict(job_id: str) -> ResponseReturnValue:
    found = jobs.get_job(job_id, session=session(), tenant_id=g.tenant_id)
    if found.model_id is None:
        raise ApiError(409, f"the job is {found.status}; only a succeeded job has a model")
    predictor = load_predictor(
        found.model_id,
        session=session(),
        tenant_id=g.tenant_id,
        cache=current_app.extensions["trainsvc.models"],
    )
    if not request.is_json:
        raise ApiError(400, 'send the instances as JSON: {"instances": [[x, ...], ...]}')
    body = request.get_json()
    answer = Prediction(model_id=found.model_id, **predict_offloaded(predictor, body)).dump()
    if predictor.task == "classification":
        answer["classes"] = predictor.classes  # column labels for the probabilities
    return answer


@bp.get("/ui/jobs/<job_id>/events")
def events(job_id: str) -> ResponseReturnValue:
    return events_response(job_id, g.tenant_id)


@bp.get("/ui/jobs/<job_id>/plot.png")
def plot(job_id: str) -> ResponseReturnValue:
    return plot_response(jobs.get_job(job_id, session=session(), tenant_id=g.tenant_id))


# --- The model registry's pages ----------------------------------------------------------


def _registered_as(model_id: str | None) -> list[dict[str, Any]]:
    """The registered versions this trained model is: name, version, aliases."""
    if model_id is None:
        return []
    found = []
    for name, version in model_registry.versions_of_model(session(), g.tenant_id, model_id):
        row = model_registry.get(session(), g.tenant_id, name)
        aliases = [a for a, v in model_registry.aliases(session(), row).items() if v == version]
        found.append({"name": name, "version": version, "aliases": aliases})
    return found


def _registry_names() -> list[str]:
    items, _ = model_registry.listing(session(), g.tenant_id, limit=MAX_PAGE, cursor=None)
    return [row.name for row in items]


@bp.get("/ui/registry")
def registry_page() -> ResponseReturnValue:
    """The tenant's registered models, each with its versions and aliases."""
    page = query(Cursor)
    items, next_cursor = model_registry.listing(
        session(), g.tenant_id, limit=MAX_PAGE, cursor=page.cursor
    )
    models = [
        {**http.model_out(session(), row).dump(), "versions": http.versions_out(session(), row)}
        for row in items
    ]
    return render_template("registry.html", models=models, next_cursor=next_cursor)


@bp.post("/ui/jobs/<job_id>/register")
def register(job_id: str) -> ResponseReturnValue:
    """Register the job's model under a name (created if new) as its next version, and point
    an alias at it when one is given (e.g. promote it to `production`)."""
    found = jobs.get_job(job_id, session=session(), tenant_id=g.tenant_id)
    if found.model_id is None:
        raise ApiError(409, f"the job is {found.status}; only a succeeded job has a model")
    name = http.body(http.CreateRegisteredModel, {"name": request.form.get("name", "")}).name
    alias = request.form.get("alias", "").strip()
    if alias:
        alias = http.path_alias(alias)
    actor = http.actor(session(), g.tenant_id)
    with http.change(session()):
        if model_registry.find(session(), g.tenant_id, name) is None:
            model_registry.create(session(), actor, name, None)
        version = model_registry.add_version(session(), actor, name, found.model_id).version
        if alias:
            model_registry.set_alias(session(), actor, name, alias, version)
    return redirect(url_for("ui.registry_page", _anchor=f"model-{name}"), 303)


@bp.post("/ui/registry/<name>/alias")
def promote(name: str) -> ResponseReturnValue:
    """Point an alias of a registered model at one of its versions."""
    name = http.path_name(name)
    alias = http.path_alias(request.form.get("alias", "").strip())
    version = http.body(http.SetAlias, {"version": _whole(request.form.get("version"))}).version
    with http.change(session()):
        model_registry.set_alias(
            session(), http.actor(session(), g.tenant_id), name, alias, version
        )
    return redirect(url_for("ui.registry_page", _anchor=f"model-{name}"), 303)


def _whole(value: str | None) -> int | str | None:
    return (
        int(value)
        if value is not None and value.isascii() and value.isdigit() and len(value) < 10
        else value
    )


@bp.get("/ui/jobs/<job_id>/evaluation.png")
def evaluation_plot(job_id: str) -> ResponseReturnValue:
    """The job's model's evaluation figure (confusion matrix or residuals)."""
    found = jobs.get_job(job_id, session=session(), tenant_id=g.tenant_id)
    if found.model_id is None:
        raise ApiError(409, f"the job is {found.status}; only a succeeded job has a model")
    return evaluation_plot_response(found.model_id, g.tenant_id)


# -- sweeps -----------------------------------------------------------------------------------

# The "Compare optimizers" button's sweep (examples/compare_optimizers.json is the same for the
# seed job): the four optimizers of our reference material's closing exercise, three seeds each.
COMPARE_OPTIMIZERS: dict[str, Any] = {
    "space": {
        "optimizer": {
            "choices": [
                {"type": "sgd", "learning_rate": 0.01},
                {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9},
                {"type": "rmsprop", "learning_rate": 0.001},
                {"type": "adam", "learning_rate": 0.001},
            ]
        },
        "seed": {"choices": [0, 1, 2]},
    },
    "strategy": "grid",
    "objective": {"metric": "val_loss", "direction": "minimize"},
    "max_trials": 12,
    "max_parallel": 4,
    "pruner": None,
}


def compare_optimizers(spec: dict[str, Any], name: str = "compare-optimizers") -> dict[str, Any]:
    """The sweep request that trains `spec` with each of the four optimizers, three seeds each."""
    return {"name": name, "spec": spec, **copy.deepcopy(COMPARE_OPTIMIZERS)}


def _sweep_page(cursor: str | None) -> dict[str, Any]:
    items, next_cursor = sweeps.list_sweeps(
        session=session(), tenant_id=g.tenant_id, status=None, limit=50, cursor=cursor
    )
    listed = [sweeps.sweep_out(s, session=session(), board=False).dump() for s in items]
    return {"sweeps": listed, "next_cursor": next_cursor}


@bp.get("/ui/sweeps", endpoint="sweeps")
def sweeps_index() -> ResponseReturnValue:
    return render_template("sweeps.html", **_sweep_page(query(Cursor).cursor))


@bp.get("/ui/sweeps/rows")
def sweep_rows() -> ResponseReturnValue:
    return render_template("_sweep_rows.html", **_sweep_page(query(Cursor).cursor))


def _sweep(sweep_id: str) -> dict[str, Any]:
    found = sweeps.get_sweep(sweep_id, session=session(), tenant_id=g.tenant_id)
    return sweeps.sweep_out(found, session=session()).dump()


@bp.get("/ui/sweeps/<sweep_id>")
def sweep(sweep_id: str) -> ResponseReturnValue:
    shown = _sweep(sweep_id)
    return render_template("sweep.html", sweep=shown, finished=shown["status"] in TERMINAL_STATUSES)


@bp.get("/ui/sweeps/<sweep_id>/board")
def sweep_board(sweep_id: str) -> ResponseReturnValue:
    return render_template("_sweep_board.html", sweep=_sweep(sweep_id), partial=True)


@bp.get("/ui/sweeps/<sweep_id>/events")
def sweep_events(sweep_id: str) -> ResponseReturnValue:
    return api_sweeps.stream(sweep_id)  # the API's view: the tenant is the signed-in one


@bp.get("/ui/sweeps/<sweep_id>/plot.png")
def sweep_plot(sweep_id: str) -> ResponseReturnValue:
    return api_sweeps.plot(sweep_id)  # the API's view: the tenant is the signed-in one


@bp.post("/ui/sweeps/<sweep_id>/cancel")
def cancel_sweep(sweep_id: str) -> ResponseReturnValue:
    sweeps.cancel_sweep(sweep_id, session=session(), tenant_id=g.tenant_id)
    return redirect(url_for("ui.sweep", sweep_id=sweep_id), 303)


def _create_sweep(payload: Any, check: bool = False) -> Any:
    """What POST /v1/sweeps does (the same service functions): record it, or only check it."""
    settings: Settings = current_app.config["TRAINSVC_SETTINGS"]
    if check:
        return sweeps.check_sweep(
            payload, session=session(), tenant_id=g.tenant_id, settings=settings
        ).dump()
    return sweeps.submit_sweep(payload, session=session(), tenant_id=g.tenant_id, settings=settings)


def _sweep_form(text: str, status: int = 200, **context: Any) -> ResponseReturnValue:
    return render_template("new_sweep.html", sweep_text=text, **context), status


@bp.route("/ui/sweeps/new", methods=["GET", "POST"])
def new_sweep() -> ResponseReturnValue:
    if request.method == "GET":
        seed = json.loads(SEED_SPEC.read_text()) if SEED_SPEC.exists() else {}
        return _sweep_form(json.dumps(compare_optimizers(seed), indent=2))
    text = request.form.get("sweep", "")
    try:
        payload = jsonutil.loads(text)
    except jsonutil.BadJSON as exc:
        return _sweep_form(text, 400, problems=[{"field": "$", "message": str(exc)}])
    try:
        if request.form.get("action") == "check":
            return _sweep_form(text, summary=_create_sweep(payload, check=True))
        created = _create_sweep(payload)
    except ApiError as exc:  # invalid, over a cost limit or the tenant's queued quota
        if exc.status not in (422, 429):
            raise
        return _sweep_form(
            text, exc.status, problems=exc.details or [{"field": "$", "message": exc.message}]
        )
    return redirect(url_for("ui.sweep", sweep_id=created.id), 303)


@bp.post("/ui/jobs/<job_id>/compare")
def compare(job_id: str) -> ResponseReturnValue:
    """Submit the four-optimizer sweep of this job's spec and show it."""
    found = jobs.get_job(job_id, session=session(), tenant_id=g.tenant_id)
    if found.status not in TERMINAL_STATUSES:
        raise ApiError(409, f"the job is {found.status}; compare optimizers once it has finished")
    spec = JobOut.from_row(found).spec
    created = _create_sweep(compare_optimizers(spec, f"compare-optimizers: {found.name or 'job'}"))
    return redirect(url_for("ui.sweep", sweep_id=created.id), 303)
