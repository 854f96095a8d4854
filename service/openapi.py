"""The OpenAPI 3 document, built from the same pydantic models that validate requests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import BaseModel

from core import model_registry
from core.models import JOB_STATUSES
from core.schema import ID_LENGTH
from core.settings import Settings
from core.spec import JobSpec
from core.sweep_spec import MAX_TRIALS, SweepRequest
from service import schemas
from service.jsonutil import MAX_JSON_DEPTH
from service.params import MAX_PAGE, MAX_TEXT
from service.predictions import PredictRequest
from service.registry import CreateRegisteredModel, CreateVersion, SetAlias, UpdateRegisteredModel

REF = "#/components/schemas/{model}"
_DEFAULTS = Settings()
EVENTS_DESCRIPTION = (
    "A stream costs the server almost nothing while it waits, but each holds one of its "
    "tenant's slots: at most `EVENTS_MAX_PER_TENANT` "
    f"(default {_DEFAULTS.events_max_per_tenant}) open at once across all API processes; past "
    "it, `429` with `Retry-After`. The server ends every stream after `EVENTS_MAX_SECONDS` "
    f"(default {_DEFAULTS.events_max_seconds:g}; also while the job is still queued): reconnect "
    "with `Last-Event-ID` (browsers' EventSource does) to resume after the last epoch seen. A "
    "`: keepalive` comment follows `EVENTS_HEARTBEAT_SECONDS` "
    f"(default {_DEFAULTS.events_heartbeat_seconds:g}) of silence, so a proxy's read timeout "
    "must be longer."
)


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: str = "serialization") -> dict[str, str]:
        schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        for name, definition in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, definition)
        self.schemas[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _evaluation_and_export(
    model_id: dict[str, Any], errors: Any, common: tuple[int, ...]
) -> dict[str, Any]:
    """The routes of a model's evaluation plot and its export (ONNX, npz)."""
    from core.onnx_export import OPSET  # a plain constant: `onnx` itself is not imported
    from service.exports import FORMATS

    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    return {
        "/v1/models/{model_id}/evaluation.png": {
            "get": {
                "summary": "A model's evaluation on its test split as a PNG: the confusion "
                "matrix as a heat map (classification), or predicted vs actual and the residual "
                "histogram (regression)",
                "operationId": "getModelEvaluationPlot",
                "parameters": [model_id],
                "responses": {
                    "200": {
                        "description": "The figure; cacheable (ETag)",
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                        "content": {"image/png": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "Not modified (If-None-Match)"},
                    **errors(404, 422, *common),
                },
                "description": "A model trained before evaluations were kept answers 404 with "
                "code `no_evaluation`.",
            }
        },
        "/v1/models/{model_id}/export": {
            "get": {
                "summary": "Download a model: ONNX, or the stored .npz artifact",
                "operationId": "exportModel",
                "parameters": [
                    model_id,
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(FORMATS), "default": "onnx"},
                        "description": f"`onnx`: a graph of opset {OPSET} taking `input` "
                        "(float32 [batch, n_features], unscaled features: the stored "
                        "standardization is in the graph) and giving `probabilities` and "
                        "`label_index` (an index into the model's `classes`), or `predictions` "
                        "for regression. `npz`: the artifact as stored, read with "
                        "`numpy.load(..., allow_pickle=False)`; its JSON description is the "
                        "UTF-8 bytes of the `__meta__` array.",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The file (Content-Disposition: attachment)",
                        "headers": {
                            "X-ONNX-Opset": {
                                "schema": {"type": "string"},
                                "description": "The ONNX opset (format=onnx)",
                            }
                        },
                        "content": binary,
                    },
                    **errors(404, 422, 500, *common),
                },
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    c = _Components()
    error = c.ref(schemas.ErrorResponse)
    job = c.ref(schemas.JobOut)
    dataset = c.ref(schemas.DatasetOut)

    def errors(*codes: int) -> dict[str, Any]:
        text = {
            400: f"Malformed JSON, nested deeper than {MAX_JSON_DEPTH} levels of arrays and "
            f"objects, or with a number of more than {sys.get_int_max_str_digits()} digits",
            401: "Missing or invalid API key",
            404: "No such id for this tenant",
            409: "Wrong state",
            413: "Body too large",
            415: "Body is not JSON",
            422: "Validation failed (the body, a query parameter, a path id, a header); "
            "`details` lists each field path",
            429: "Rate limit reached, or too many failed authentications from this client "
            "address; see Retry-After",
            500: "The stored model cannot be loaded",
            503: "The database cannot be reached now (down, restarting, cut off); see Retry-After",
        }
        return {str(code): _json(error, text[code]) for code in codes}

    common = (401, 429, 503)

    def ident(name: str) -> dict[str, Any]:
        """A path id: longer ones, or ones with a NUL, answer 422 (every id is a UUID)."""
        schema = {"type": "string", "minLength": 1, "maxLength": ID_LENGTH}
        return {"name": name, "in": "path", "required": True, "schema": schema}

    job_id, model_id, dataset_id = ident("job_id"), ident("model_id"), ident("dataset_id")
    sweep_id = ident("sweep_id")
    sweep = c.ref(schemas.SweepOut)
    text = {"type": "string", "maxLength": MAX_TEXT}
    paging = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 20},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": ID_LENGTH}},
    ]
    paths: dict[str, Any] = {
        "/v1/jobs": {
            "post": {
                "summary": "Submit a training job",
                "operationId": "submitJob",
                "parameters": [
                    {
                        "name": "dry_run",
                        "in": "query",
                        "schema": {"type": "boolean"},
                        "description": "Validate and summarise the model; queue nothing.",
                    },
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT},
                        "description": "Same key and body: the same job; other body: 422.",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": c.ref(JobSpec, "validation")}},
                },
                "responses": {
                    "202": {
                        **_json(job, "Accepted and queued"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "200": _json(c.ref(schemas.DryRun), "Dry run: the model summary"),
                    **errors(400, 413, 415, 422, *common),
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "operationId": "listJobs",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(JOB_STATUSES)},
                    },
                    *paging,
                ],
                "responses": {
                    "200": _json(c.ref(schemas.JobList), "A page of jobs"),
                    **errors(422, *common),
                },
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "Read a job",
                "operationId": "getJob",
                "parameters": [job_id],
                "responses": {"200": _json(job, "The job"), **errors(404, 422, *common)},
            }
        },
        "/v1/jobs/{job_id}/metrics": {
            "get": {
                "summary": "A job's per-epoch metrics",
                "operationId": "getJobMetrics",
                "parameters": [job_id],
                "responses": {
                    "200": _json(c.ref(schemas.Metrics), "One row per finished epoch"),
                    **errors(404, 422, *common),
                },
            }
        },
        "/v1/jobs/{job_id}/plot.png": {
            "get": {
                "summary": "A job's learning curves as a PNG (loss; accuracy when recorded)",
                "operationId": "getJobPlot",
                "parameters": [job_id],
                "responses": {
                    "200": {
                        "description": "Training vs validation per epoch; cacheable (ETag) "
                        "once the job has finished",
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                        "content": {"image/png": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "Not modified (If-None-Match)"},
                    **errors(404, 422, *common),
                },
            }
        },
        "/v1/jobs/{job_id}/events": {
            "get": {
                "summary": "Server-Sent Events: status, then each epoch, until the job ends",
                "operationId": "streamJobEvents",
                "parameters": [
                    job_id,
                    {
                        "name": "after",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0},
                        "description": "Skip epochs up to this one (resume).",
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
                        "description": "The id of the last epoch event seen (resume).",
                    },
                ],
                "description": EVENTS_DESCRIPTION,
                "responses": {
                    "200": {
                        "description": "`event: status` (data: the job), `event: epoch` "
                        "(id: the epoch; data: one metrics row) as they are recorded, "
                        "`: keepalive` after EVENTS_HEARTBEAT_SECONDS of silence; ends after "
                        "a finished job's status, or after EVENTS_MAX_SECONDS",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **errors(404, 422, *common),
                    "429": _json(
                        error,
                        "Rate limit reached, or the tenant already has EVENTS_MAX_PER_TENANT "
                        "streams open (code `too_many_streams`); see Retry-After",
                    ),
                    "503": _json(error, "The job's events cannot be read now; see Retry-After"),
                },
            }
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or running job",
                "operationId": "cancelJob",
                "parameters": [job_id],
                "responses": {
                    "202": _json(job, "Cancelled, or asked to stop after this epoch"),
                    **errors(404, 409, 422, *common),
                },
            }
        },
        "/v1/sweeps": {
            "post": {
                "summary": "Submit a sweep: a base job spec, a search space and a strategy",
                "operationId": "submitSweep",
                "description": "The space maps job-spec field paths (`optimizer`, "
                "`optimizer.learning_rate`, `layers[0].units`, `batch_size`, `seed`, ...) to "
                '`{"choices": [...]}` (values or whole objects) or to a range `{"low", '
                '"high", "log", "type": "int"|"float"}`. Strategies: `grid` '
                "(choices only; every combination), `random`, `tpe` (seeded by `seed`). "
                f"`max_trials` at most {MAX_TRIALS:,}. Every trial is validated as a full job "
                "spec first: a bad one is a 422 naming its values (`params`) and field path. "
                "Trials are ordinary jobs (tagged `sweep`), at most `max_parallel` unfinished "
                "at once; the sweep's total cost is admitted or refused as one job's is.",
                "parameters": [
                    {
                        "name": "dry_run",
                        "in": "query",
                        "schema": {"type": "boolean"},
                        "description": "Validate only: the trials (grid) or the space, the "
                        "largest network's parameter count, and the cost.",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": c.ref(SweepRequest, "validation")}},
                },
                "responses": {
                    "202": {
                        **_json(sweep, "Accepted: the sweep, queued"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "200": _json(c.ref(schemas.SweepDryRun), "Dry run"),
                    **errors(400, 413, 415, 422, *common),
                },
            },
            "get": {
                "summary": "List sweeps, newest first (without their leaderboards)",
                "operationId": "listSweeps",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(JOB_STATUSES)},
                    },
                    *paging,
                ],
                "responses": {
                    "200": _json(c.ref(schemas.SweepList), "A page of sweeps"),
                    **errors(422, *common),
                },
            },
        },
        "/v1/sweeps/{sweep_id}": {
            "get": {
                "summary": "Read a sweep: progress, best trial, leaderboard",
                "operationId": "getSweep",
                "parameters": [sweep_id],
                "responses": {"200": _json(sweep, "The sweep"), **errors(404, 422, *common)},
            }
        },
        "/v1/sweeps/{sweep_id}/plot.png": {
            "get": {
                "summary": "Every trial's curve overlaid, beside the objective against each "
                "searched parameter, as a PNG",
                "operationId": "getSweepPlot",
                "parameters": [sweep_id],
                "responses": {
                    "200": {
                        "description": "Pruned trials are red, dashed and end in a cross; "
                        "cacheable (ETag) once the sweep has finished",
                        "headers": {"ETag": {"schema": {"type": "string"}}},
                        "content": {"image/png": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "Not modified (If-None-Match)"},
                    **errors(404, 422, *common),
                },
            }
        },
        "/v1/sweeps/{sweep_id}/events": {
            "get": {
                "summary": "Server-Sent Events: the sweep, each trial's start and end, and "
                "every epoch, until the sweep ends",
                "operationId": "streamSweepEvents",
                "parameters": [sweep_id],
                "description": EVENTS_DESCRIPTION,
                "responses": {
                    "200": {
                        "description": "`event: sweep` (data: the sweep without its "
                        "leaderboard) first and on each change of state, progress or best; "
                        "`event: trial` (data: job_id, trial, status, params, epochs, metrics, "
                        "error) when a trial is created, starts and ends; `event: epoch` (data: "
                        "job_id, trial and one metrics row); `: keepalive` after "
                        "EVENTS_HEARTBEAT_SECONDS of silence",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **errors(404, 422, *common),
                    "429": _json(
                        error,
                        "Rate limit reached, or the tenant already has EVENTS_MAX_PER_TENANT "
                        "streams open (code `too_many_streams`); see Retry-After",
                    ),
                },
            }
        },
        "/v1/sweeps/{sweep_id}/cancel": {
            "post": {
                "summary": "Cancel a sweep: its queued trials at once, its running ones after "
                "their current epoch",
                "operationId": "cancelSweep",
                "parameters": [sweep_id],
                "responses": {
                    "202": _json(sweep, "Cancelled"),
                    **errors(404, 409, 422, *common),
                },
            }
        },
        "/v1/datasets": {
            "post": {
                "summary": "Upload a CSV dataset (a header row; one label column)",
                "operationId": "uploadDataset",
                "parameters": [
                    {
                        "name": "label",
                        "in": "query",
                        "required": True,
                        "schema": text,
                        "description": "The label column (or a `label` form field)",
                    },
                    {"name": "name", "in": "query", "schema": {**text, "minLength": 1}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "text/csv": {"schema": {"type": "string"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "label": text,
                                    "name": {**text, "minLength": 1},
                                },
                                "required": ["file"],
                            }
                        },
                    },
                },
                "responses": {
                    "201": {
                        **_json(dataset, 'Stored; use it as {"dataset_id": ID} in a job spec'),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **errors(413, 415, 422, *common),
                },
            },
            "get": {
                "summary": "List datasets, newest first",
                "operationId": "listDatasets",
                "parameters": [
                    *paging,
                ],
                "responses": {
                    "200": _json(c.ref(schemas.DatasetList), "A page of datasets"),
                    **errors(422, *common),
                },
            },
        },
        "/v1/datasets/{dataset_id}": {
            "get": {
                "summary": "Read a dataset's description (rows, columns, label counts)",
                "operationId": "getDataset",
                "parameters": [dataset_id],
                "responses": {"200": _json(dataset, "The dataset"), **errors(404, 422, *common)},
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "summary": "A trained model's metadata",
                "operationId": "getModel",
                "parameters": [model_id],
                "responses": {
                    "200": _json(c.ref(schemas.ModelOut), "The model"),
                    **errors(404, 422, *common),
                },
            }
        },
        "/v1/models/{model_id}/predict": {
            "post": {
                "summary": "Predict with a trained model",
                "operationId": "predict",
                "parameters": [model_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": c.ref(PredictRequest, "validation")}
                    },
                },
                "responses": {
                    "200": _json(c.ref(schemas.Prediction), "Predictions"),
                    **errors(400, 404, 413, 415, 422, 500, *common),
                },
            }
        },
    }
    paths.update(registry_paths(c, errors, common))
    paths.update(v2_paths(c))
    paths.update(_evaluation_and_export(model_id, errors, common))
    health = c.ref(schemas.Health)
    for path, summary in (("/healthz", "Liveness"), ("/readyz", "Readiness: database, broker")):
        responses = {"200": _json(health, "OK")}
        if path == "/readyz":
            responses["503"] = _json(health, "Not ready")
        paths[path] = {"get": {"summary": summary, "security": [], "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trainsvc",
            "version": "1",
            "description": "Train fully connected networks over HTTP and serve their predictions.",
        },
        "paths": paths,
        "components": {
            "schemas": c.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def registry_paths(
    c: _Components, errors: Callable[..., dict[str, Any]], common: tuple[int, ...]
) -> dict[str, Any]:
    """/v1/registered-models: the model registry (names, versions, aliases, history)."""
    name = _path(
        "name",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": model_registry.NAME_LENGTH,
            "pattern": model_registry.NAME_PATTERN,
        },
    )
    alias = _path(
        "alias",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": model_registry.ALIAS_LENGTH,
            "pattern": model_registry.ALIAS_PATTERN,
        },
    )
    version = _path("version", {"type": "integer", "minimum": 1})
    registered = c.ref(schemas.RegisteredModelOut)
    one_version = c.ref(schemas.ModelVersionOut)
    prediction = c.ref(schemas.Prediction)
    created = {"headers": {"Location": {"schema": {"type": "string"}}}}
    predict_body = _body(c.ref(PredictRequest, "validation"))
    predicted = {
        **_json(prediction, "Predictions, as from /v1/models/{model_id}/predict"),
        "headers": {
            "X-Model-Version": {"schema": {"type": "string"}},
            "X-Model-Id": {"schema": {"type": "string"}},
        },
    }
    gone = {"204": {"description": "Deleted"}}
    body_errors = (400, 413, 415, 422)  # malformed JSON, too large, not JSON, not valid
    return {
        "/v1/registered-models": {
            "post": {
                "summary": "Register a model name (versions are added to it)",
                "operationId": "createRegisteredModel",
                "description": f"Names match `{model_registry.NAME_PATTERN}` and are per "
                "tenant; a name taken by this tenant answers 409.",
                "requestBody": _body(c.ref(CreateRegisteredModel, "validation")),
                "responses": {
                    "201": {**_json(registered, "Registered"), **created},
                    **errors(400, 409, 413, 415, 422, *common),
                },
            },
            "get": {
                "summary": "List registered models, newest first",
                "operationId": "listRegisteredModels",
                "parameters": _paging(),
                "responses": {
                    "200": _json(c.ref(schemas.RegisteredModelList), "A page"),
                    **errors(422, *common),
                },
            },
        },
        "/v1/registered-models/{name}": {
            "get": {
                "summary": "Read a registered model (aliases, latest version)",
                "operationId": "getRegisteredModel",
                "parameters": [name],
                "responses": {"200": _json(registered, "The model"), **errors(404, 422, *common)},
            },
            "patch": {
                "summary": "Change a registered model's description",
                "operationId": "updateRegisteredModel",
                "parameters": [name],
                "requestBody": _body(c.ref(UpdateRegisteredModel, "validation")),
                "responses": {
                    "200": _json(registered, "Changed"),
                    **errors(*body_errors, 404, *common),
                },
            },
            "delete": {
                "summary": "Delete a registered model, its versions, aliases and history "
                "(the trained models stay)",
                "operationId": "deleteRegisteredModel",
                "parameters": [name],
                "responses": {**gone, **errors(404, 422, *common)},
            },
        },
        "/v1/registered-models/{name}/versions": {
            "post": {
                "summary": "Add one of the tenant's trained models as the next version",
                "operationId": "createModelVersion",
                "description": "Versions are numbered 1, 2, ...; a deleted version's number is "
                "not given again. Another tenant's model id answers 404.",
                "parameters": [name],
                "requestBody": _body(c.ref(CreateVersion, "validation")),
                "responses": {
                    "201": {**_json(one_version, "Added"), **created},
                    **errors(*body_errors, 404, *common),
                },
            },
            "get": {
                "summary": "List a registered model's versions, oldest first",
                "operationId": "listModelVersions",
                "parameters": [name],
                "responses": {
                    "200": _json(c.ref(schemas.ModelVersionList), "The versions"),
                    **errors(404, 422, *common),
                },
            },
        },
        "/v1/registered-models/{name}/versions/{version}": {
            "get": {
                "summary": "Read a version",
                "operationId": "getModelVersion",
                "parameters": [name, version],
                "responses": {
                    "200": _json(one_version, "The version"),
                    **errors(404, 422, *common),
                },
            },
            "delete": {
                "summary": "Delete a version (409 while an alias points at it)",
                "operationId": "deleteModelVersion",
                "parameters": [name, version],
                "responses": {**gone, **errors(404, 409, 422, *common)},
            },
        },
        "/v1/registered-models/{name}/aliases/{alias}": {
            "put": {
                "summary": "Point an alias at a version (creates it, or moves it atomically)",
                "operationId": "setModelAlias",
                "description": "A version the model does not have answers 422.",
                "parameters": [name, alias],
                "requestBody": _body(c.ref(SetAlias, "validation")),
                "responses": {
                    "200": _json(registered, "The model with its aliases"),
                    **errors(*body_errors, 404, *common),
                },
            },
            "delete": {
                "summary": "Delete an alias",
                "operationId": "deleteModelAlias",
                "parameters": [name, alias],
                "responses": {**gone, **errors(404, 422, *common)},
            },
        },
        "/v1/registered-models/{name}/history": {
            "get": {
                "summary": "Every change to a registered model: what, who (tenant, key prefix), "
                "when; newest first",
                "operationId": "getRegisteredModelHistory",
                "parameters": [name, *_paging()],
                "responses": {
                    "200": _json(c.ref(schemas.RegistryHistory), "A page of changes"),
                    **errors(404, 422, *common),
                },
            }
        },
        "/v1/registered-models/{name}@{alias}/predict": {
            "post": {
                "summary": "Predict with the version an alias points at",
                "operationId": "predictByAlias",
                "parameters": [name, alias],
                "requestBody": predict_body,
                "responses": {"200": predicted, **errors(*body_errors, 404, 500, *common)},
            }
        },
        "/v1/registered-models/{name}/versions/{version}/predict": {
            "post": {
                "summary": "Predict with a version",
                "operationId": "predictByVersion",
                "parameters": [name, version],
                "requestBody": predict_body,
                "responses": {"200": predicted, **errors(*body_errors, 404, 500, *common)},
            }
        },
    }


def _paging() -> list[dict[str, Any]]:
    return [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 20},
        },
        {"name": "cursor", "in": "query", "schema": {"type": "string", "maxLength": ID_LENGTH}},
    ]


V2_NAME = (
    "A registered model's name (its `production` alias unless a version is given) or a model id."
)


def v2_paths(c: _Components) -> dict[str, Any]:
    """/v2: the Open Inference Protocol (KServe V2) over REST. Errors are `{"error": "..."}`."""
    error = c.ref(schemas.V2Error)
    text = {
        400: "Bad request: unreadable JSON, a missing or unknown input, wrong shape or "
        "datatype (FP32 or FP64 only; BYTES refused), non-finite data, an unknown output, "
        "binary tensor data",
        401: "Missing or invalid API key",
        404: "No such model name, version or id for this tenant (or no `production` alias)",
        413: "Body too large",
        429: "Rate limit reached; see Retry-After",
    }

    def errors(*codes: int) -> dict[str, Any]:
        return {str(code): _json(error, text[code]) for code in codes}

    name = {**_path("model_name", {"type": "string", "minLength": 1}), "description": V2_NAME}
    version = _path("model_version", {"type": "string", "pattern": "^[0-9]{1,9}$"})
    metadata = _json(c.ref(schemas.V2ModelMetadata), "The model's input and output tensors")
    ready = _json(c.ref(schemas.V2ModelReady), "Loaded and ready")
    infer = {
        "summary": "Inference: one FP32 input `input` [rows, n_features], data flat or nested "
        "(row-major); outputs `probabilities` and `predictions` (classification) or "
        "`predictions` (regression); `outputs` may ask for a subset; `id` is echoed",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object", "required": ["inputs"]}}},
        },
        "responses": {
            "200": _json(c.ref(schemas.V2InferResponse), "The output tensors"),
            **errors(400, 404, 413, 401, 429),
        },
    }
    by_name = [name]
    by_version = [name, version]
    return {
        "/v2": {
            "get": {
                "summary": "Open Inference Protocol: server metadata",
                "operationId": "v2ServerMetadata",
                "responses": {
                    "200": _json(c.ref(schemas.V2ServerMetadata), "The server"),
                    **errors(401, 429),
                },
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "Open Inference Protocol: server live",
                "operationId": "v2Live",
                "security": [],
                "responses": {"200": _json(c.ref(schemas.V2Live), "Live")},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Open Inference Protocol: server ready (the database answers)",
                "operationId": "v2Ready",
                "security": [],
                "responses": {
                    "200": _json(c.ref(schemas.V2Ready), "Ready"),
                    "503": _json(c.ref(schemas.V2Ready), "Not ready"),
                },
            }
        },
        "/v2/models/{model_name}": {
            "get": {
                "summary": "Open Inference Protocol: model metadata",
                "operationId": "v2ModelMetadata",
                "parameters": by_name,
                "responses": {"200": metadata, **errors(404, 401, 429)},
            }
        },
        "/v2/models/{model_name}/versions/{model_version}": {
            "get": {
                "summary": "Open Inference Protocol: a version's metadata",
                "operationId": "v2ModelVersionMetadata",
                "parameters": by_version,
                "responses": {"200": metadata, **errors(404, 401, 429)},
            }
        },
        "/v2/models/{model_name}/ready": {
            "get": {
                "summary": "Open Inference Protocol: model ready",
                "operationId": "v2ModelReady",
                "parameters": by_name,
                "responses": {"200": ready, **errors(404, 401, 429)},
            }
        },
        "/v2/models/{model_name}/versions/{model_version}/ready": {
            "get": {
                "summary": "Open Inference Protocol: a version ready",
                "operationId": "v2ModelVersionReady",
                "parameters": by_version,
                "responses": {"200": ready, **errors(404, 401, 429)},
            }
        },
        "/v2/models/{model_name}/infer": {
            "post": {**infer, "operationId": "v2Infer", "parameters": by_name}
        },
        "/v2/models/{model_name}/versions/{model_version}/infer": {
            "post": {**infer, "operationId": "v2InferVersion", "parameters": by_version}
        },
    }
