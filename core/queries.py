"""Tenant-scoped lookups, written once: another tenant's row is as absent as one never made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session, load_only

from core.models import Dataset, Job, Model, RegisteredModel, Sweep

# The kinds a tenant owns, each named by a string id (a new one is added here).
Row = TypeVar("Row", Job, Dataset, Model, RegisteredModel, Sweep)
Columns = Sequence[InstrumentedAttribute[Any]]


class NotFound(LookupError):
    """No row of this kind with this id for this tenant."""

    def __init__(self, kind: str, row_id: str) -> None:
        self.kind, self.row_id = kind, row_id
        super().__init__(f"no {kind} with id {row_id!r}")

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def of(
        cls, model: type[Job | Dataset | Model | RegisteredModel | Sweep], row_id: str
    ) -> NotFound:
        """The error for a missing row of `model` (its kind is the class name: Job → job)."""
        return cls(model.__name__.lower(), row_id)


def scoped(
    model: type[Row], tenant_id: str, *where: ColumnElement[bool], columns: Columns = ()
) -> Select[Row]:
    """SELECT the tenant's rows of `model` (only `columns`, and the id, when given)."""
    query = select(model).where(model.tenant_id == tenant_id, *where)
    return query.options(load_only(*columns)) if columns else query


def find(
    session: Session, model: type[Row], row_id: str, tenant_id: str, *, columns: Columns = ()
) -> Row | None:
    """The tenant's row of `model` with this id, or None."""
    return session.scalar(scoped(model, tenant_id, model.id == row_id, columns=columns))


def owned(
    session: Session, model: type[Row], row_id: str, tenant_id: str, *, columns: Columns = ()
) -> Row:
    """The tenant's row of `model` with this id; `NotFound` for a missing or foreign id."""
    row = find(session, model, row_id, tenant_id, columns=columns)
    if row is None:
        raise NotFound.of(model, row_id)
    return row


def page(
    session: Session,
    model: type[Row],
    tenant_id: str,
    *where: ColumnElement[bool],
    limit: int,
    cursor: str | None,
    columns: Columns = (),
) -> tuple[list[Row], str | None]:
    """A page of the tenant's rows, newest (highest id) first, and the next page's cursor.

    The cursor is the id of the last row of the previous page; one row past `limit` is read
    to learn whether another page follows (None: this is the last).
    """
    query = scoped(model, tenant_id, *where, columns=columns)
    if cursor:
        query = query.where(model.id < cursor)
    rows = list(session.scalars(query.order_by(model.id.desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor
