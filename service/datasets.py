"""Dataset actions behind the views: upload (parse and store), read, list."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.models import Dataset
from core.queries import owned, page
from core.uploads import CsvError, label_counts, parse_csv, to_npz
from service import offload
from service.errors import ApiError


def create_dataset(
    raw: bytes,
    *,
    label: str,
    name: str | None,
    session: Session,
    tenant_id: str,
    max_rows: int,
) -> Dataset:
    """Parse and store an upload; 422 with the line of each problem when it cannot be read.

    `label` and `name` come checked (service.params.Upload: no NUL, at most 200 characters).
    """
    if not label:
        raise ApiError(
            422,
            "name the label column: ?label=COLUMN (or a `label` form field)",
            code="invalid_dataset",
            details=[{"field": "label", "message": "required"}],
        )
    try:
        # Parsing up to MAX_DATASET_BYTES of CSV is CPU work: off the event loop.
        described = offload.run(_parsed, raw, label, max_rows)
    except CsvError as exc:
        raise ApiError(422, str(exc), code="invalid_dataset", details=exc.details) from None
    dataset = Dataset(tenant_id=tenant_id, name=name or "upload.csv", label=label, **described)
    session.add(dataset)
    session.commit()
    return dataset


def _parsed(raw: bytes, label: str, max_rows: int) -> dict[str, Any]:
    """The upload parsed: the Dataset columns that describe it and its arrays (plain values)."""
    parsed = parse_csv(raw, label, max_rows=max_rows)
    return {
        "columns": parsed.columns,
        "rows": len(parsed.y),
        "label_kind": parsed.label_kind,
        "label_counts": label_counts(parsed.y, parsed.label_kind),
        "size_bytes": len(raw),
        "data": to_npz(parsed),
    }


def get_dataset(dataset_id: str, *, session: Session, tenant_id: str) -> Dataset:
    """The tenant's dataset, described (its arrays are not loaded); `NotFound` (404) otherwise."""
    return owned(session, Dataset, dataset_id, tenant_id, columns=DESCRIBED)


def list_datasets(
    *, session: Session, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Dataset], str | None]:
    """Newest first; the cursor is the id of the last dataset of the previous page."""
    # Only the described columns: never load every dataset's arrays to list them.
    return page(session, Dataset, tenant_id, limit=limit, cursor=cursor, columns=DESCRIBED)


# What a dataset's description reads: everything but the arrays.
DESCRIBED = (
    Dataset.name,
    Dataset.label,
    Dataset.columns,
    Dataset.rows,
    Dataset.label_kind,
    Dataset.label_counts,
    Dataset.size_bytes,
    Dataset.created_at,
)
