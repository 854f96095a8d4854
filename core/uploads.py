"""Uploaded CSV datasets: parse a header row, numeric features and a label column; store the
arrays as `.npz` (never pickled); tell a job spec what it needs to know of an upload."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from core.dataset_spec import MAX_CLASSES, MAX_FEATURES, UploadedInfo
from core.models import Dataset
from core.queries import find
from core.spec import DatasetLookup

MAX_PROBLEMS = 10  # a broken file reports this many problems, not one per row


@dataclass(frozen=True)
class ParsedCsv:
    columns: list[str]
    label: str
    X: NDArray[np.float64]
    y: NDArray[Any]
    label_kind: str  # "int", "str" or "float"


class CsvError(ValueError):
    """A CSV that cannot become a dataset; `details` names each problem's line and column."""

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _label_array(values: list[str]) -> tuple[NDArray[Any], str]:
    """Labels as integers when every one is a whole number, floats when numeric, else strings."""
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        floats = np.asarray(numbers, dtype=np.float64)
        if np.all(floats == np.round(floats)) and np.all(np.abs(floats) < 2**53):
            return floats.astype(np.int64), "int"
        return floats, "float"
    return np.asarray(values, dtype=np.str_), "str"


def parse_csv(raw: bytes, label: str, *, max_rows: int) -> ParsedCsv:
    """Parse CSV bytes: a header row, numeric feature columns and one (non-empty) label column."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"the file is not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise CsvError("the file is empty: it needs a header row naming the columns")
        header = [h.strip() for h in header]
        problems = _header_problems(header, label)
        if problems:
            raise CsvError("the header row has problems", problems)
        label_at = header.index(label)
        feature_at = [i for i in range(len(header)) if i != label_at]
        rows: list[list[float]] = []
        labels: list[str] = []
        problems = []
        for fields in reader:
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(rows) >= max_rows:
                raise CsvError(f"the file has more than {max_rows:,} rows (MAX_DATASET_ROWS)")
            if len(fields) != len(header):
                problems.append(
                    _problem(line, f"has {len(fields)} fields; the header has {len(header)}")
                )
            else:
                row = _parse_row(fields, header, feature_at, line, problems)
                value = fields[label_at].strip()
                if not value:
                    problems.append(_problem(line, f"the label column {label!r} is empty"))
                if row is not None and value:
                    rows.append(row)
                    labels.append(value)
            if len(problems) >= MAX_PROBLEMS:
                break
    except csv.Error as exc:
        raise CsvError(f"line {reader.line_num}: {exc}") from None
    if problems:
        shown = " (showing the first few)" if len(problems) >= MAX_PROBLEMS else ""
        raise CsvError(f"{len(problems)} row(s) cannot be read{shown}", problems)
    if len(rows) < 2:
        raise CsvError("the file needs at least two data rows below the header")
    y, kind = _label_array(labels)
    X = np.asarray(rows, dtype=np.float64)
    return ParsedCsv(header, label, X, y, kind)


def _problem(line: int, message: str) -> dict[str, str]:
    return {"field": f"line {line}", "message": message}


MAX_COLUMN_NAME = 200  # as the label column's name is stored
SHOWN_COLUMNS = 20  # an error message lists at most this many column names


def _header_problems(header: list[str], label: str) -> list[dict[str, str]]:
    """Problems of the header row, in time linear in its length (the column limit first)."""
    if len(header) - 1 > MAX_FEATURES:
        return [
            {
                "field": "line 1",
                "message": f"the header has {len(header):,} columns; at most {MAX_FEATURES:,} "
                "feature columns and the label",
            }
        ]
    problems = []
    counts = Counter(header)
    if counts.get("", 0):
        problems.append({"field": "line 1", "message": "every column needs a name"})
    duplicated = sorted(h for h, n in counts.items() if h and n > 1)
    if duplicated:
        shown = ", ".join(duplicated[:SHOWN_COLUMNS]) + (
            ", …" if len(duplicated) > SHOWN_COLUMNS else ""
        )
        problems.append({"field": "line 1", "message": f"column names repeat: {shown}"})
    too_long = [h for h in counts if len(h) > MAX_COLUMN_NAME]
    if too_long:
        problems.append(
            {
                "field": "line 1",
                "message": f"a column name is longer than {MAX_COLUMN_NAME} characters: "
                f"{too_long[0][:40]!r}…",
            }
        )
    if any("\x00" in h for h in counts):
        problems.append({"field": "line 1", "message": "a column name holds a NUL character"})
    if label not in counts:
        columns = ", ".join(header[:SHOWN_COLUMNS]) + (", …" if len(header) > SHOWN_COLUMNS else "")
        problems.append(
            {"field": "label", "message": f"no column named {label!r}; the columns are {columns}"}
        )
    elif len(header) < 2:
        problems.append({"field": "line 1", "message": "there must be a feature column too"})
    return problems


def _parse_row(
    fields: list[str], header: list[str], feature_at: list[int], line: int, problems: list[Any]
) -> list[float] | None:
    row = []
    for i in feature_at:
        value = _number(fields[i])
        if value is None:
            text = fields[i].strip()
            column = f"column {header[i]!r}"
            what = (
                f"{column}: {text[:40]!r} is not a finite number" if text else f"{column} is empty"
            )
            problems.append(_problem(line, what))
            return None
        row.append(value)
    return row


def label_counts(y: NDArray[Any], kind: str) -> dict[str, int] | None:
    """Rows per class label, for labels that can be classes (not fractional, not too many)."""
    if kind == "float":
        return None
    counts = Counter(y.tolist())
    if len(counts) > MAX_CLASSES:
        return None
    return {str(k): v for k, v in sorted(counts.items())}


def to_npz(parsed: ParsedCsv) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=parsed.X, y=parsed.y)
    return buffer.getvalue()


def load_arrays(data: bytes) -> tuple[NDArray[np.float64], NDArray[Any]]:
    """The stored X and y; never unpickles."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return arrays["X"], arrays["y"]


def info_lookup(session: Session, tenant_id: str) -> DatasetLookup:
    """A function from dataset id to what a job spec needs to know of it (None: not found)."""

    def lookup(dataset_id: str) -> UploadedInfo | None:
        row = find(session, Dataset, dataset_id, tenant_id, columns=INFO_COLUMNS)
        if row is None:
            return None
        n_labels = len(row.label_counts) if row.label_counts is not None else None
        return UploadedInfo(row.rows, len(row.columns) - 1, row.label_kind, n_labels)

    return lookup


INFO_COLUMNS = (Dataset.rows, Dataset.columns, Dataset.label_kind, Dataset.label_counts)
