"""Dataset actions behind the views: upload (parse and store), read, list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Dataset
from core.uploads import CsvError, label_counts, parse_csv, to_npz
from service.errors import ApiError
from service.jobs import iso

MAX_NAME = 200


def create_dataset(
    raw: bytes,
    *,
    label: str,
    name: str | None,
    session: Session,
    tenant_id: str,
    max_rows: int,
) -> Dataset:
    """Parse and store an upload; 422 with the line of each problem when it cannot be read."""
    if not label:
        raise ApiError(
            422,
            "name the label column: ?label=COLUMN (or a `label` form field)",
            code="invalid_dataset",
            details=[{"field": "label", "message": "required"}],
        )
    if name is not None and not 1 <= len(name) <= MAX_NAME:
        raise ApiError(
            422,
            f"name must be 1 to {MAX_NAME} characters",
            code="invalid_dataset",
            details=[{"field": "name", "message": "bad length"}],
        )
    try:
        parsed = parse_csv(raw, label, max_rows=max_rows)
    except CsvError as exc:
        raise ApiError(422, str(exc), code="invalid_dataset", details=exc.details) from None
    dataset = Dataset(
        tenant_id=tenant_id,
        name=name or "upload.csv",
        label=label,
        columns=parsed.columns,
        rows=len(parsed.y),
        label_kind=parsed.label_kind,
        label_counts=label_counts(parsed.y, parsed.label_kind),
        size_bytes=len(raw),
        data=to_npz(parsed),
    )
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(dataset_id: str, *, session: Session, tenant_id: str) -> Dataset:
    dataset = session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)
    )
    if dataset is None:
        raise ApiError(404, f"no dataset with id {dataset_id!r}")
    return dataset


def list_datasets(
    *, session: Session, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Dataset], str | None]:
    """Newest first; the cursor is the id of the last dataset of the previous page."""
    query = select(Dataset).where(Dataset.tenant_id == tenant_id)
    if cursor:
        query = query.where(Dataset.id < cursor)
    # Only the listed columns: never load every dataset's arrays to list them.
    rows = list(
        session.execute(
            query.with_only_columns(*LISTED).order_by(Dataset.id.desc()).limit(limit + 1)
        ).mappings()
    )
    next_cursor = rows[limit - 1]["id"] if len(rows) > limit else None
    return [Dataset(**row) for row in rows[:limit]], next_cursor


LISTED = (
    Dataset.id,
    Dataset.name,
    Dataset.label,
    Dataset.columns,
    Dataset.rows,
    Dataset.label_kind,
    Dataset.label_counts,
    Dataset.size_bytes,
    Dataset.created_at,
)


def dataset_to_dict(dataset: Dataset) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "rows": dataset.rows,
        "columns": dataset.columns,
        "features": [c for c in dataset.columns if c != dataset.label],
        "label": dataset.label,
        "label_kind": dataset.label_kind,
        "label_counts": dataset.label_counts,
        "bytes": dataset.size_bytes,
        "created_at": iso(dataset.created_at),
    }
