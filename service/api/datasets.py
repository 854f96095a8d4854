"""/v1/datasets: upload a CSV, list uploads, read one."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from core.settings import Settings
from service import datasets
from service.api.common import paging, session, tenant
from service.errors import ApiError
from service.params import Upload, query
from service.schemas import DatasetList, DatasetOut

bp = Blueprint("datasets", __name__, url_prefix="/v1/datasets")


@bp.before_request
def _authenticate() -> None:
    tenant()


def _upload() -> tuple[bytes, str, str | None]:
    """The CSV bytes, label column and name from a text/csv body or a multipart form."""
    settings: Settings = current_app.config["TRAINSVC_SETTINGS"]
    mimetype = request.mimetype
    fields: Mapping[str, str]
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(
                422,
                "send the CSV in a form field named `file`",
                code="invalid_dataset",
                details=[{"field": "file", "message": "required"}],
            )
        raw = upload.read(settings.max_dataset_bytes + 1)
        # A form field over the same query parameter, either over the file's own name.
        sources = ({"name": upload.filename or ""}, request.args, request.form)
        fields = {key: value for source in sources for key, value in source.items() if value}
    elif mimetype in ("text/csv", "application/csv"):
        raw = request.get_data(cache=False)
        fields = request.args
    else:
        raise ApiError(
            415, "send the CSV as Content-Type: text/csv, or as multipart/form-data field `file`"
        )
    if len(raw) > settings.max_dataset_bytes:
        raise ApiError(
            413, f"the CSV is larger than {settings.max_dataset_bytes:,} bytes (MAX_DATASET_BYTES)"
        )
    given = query(Upload, fields, code="invalid_dataset")
    return raw, given.label, given.name


@bp.post("")
def upload() -> ResponseReturnValue:
    raw, label, name = _upload()
    settings: Settings = current_app.config["TRAINSVC_SETTINGS"]
    dataset = datasets.create_dataset(
        raw,
        label=label,
        name=name,
        session=session(),
        tenant_id=tenant(),
        max_rows=settings.max_dataset_rows,
    )
    location = url_for("datasets.read", dataset_id=dataset.id)
    return jsonify(DatasetOut.from_row(dataset).dump()), 201, {"Location": location}


@bp.get("")
def index() -> ResponseReturnValue:
    items, next_cursor = datasets.list_datasets(**paging())
    listed = DatasetList(items=[DatasetOut.from_row(d) for d in items], next_cursor=next_cursor)
    return jsonify(listed.dump())


@bp.get("/<dataset_id>")
def read(dataset_id: str) -> ResponseReturnValue:
    dataset = datasets.get_dataset(dataset_id, session=session(), tenant_id=tenant())
    return jsonify(DatasetOut.from_row(dataset).dump())
