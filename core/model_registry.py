"""The model registry: a tenant's named models, their numbered versions and aliases, and the
history of every change. Each function runs inside the caller's transaction, so a change and its
history entry are written together or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.models import Model, ModelAlias, ModelVersion, RegisteredModel, RegistryEvent, utcnow
from core.queries import NotFound, owned, page, scoped

# A registered model's name: letters, digits, '.', '_' and '-', starting with a letter or digit
# (no '/', which would split the path, and no '@', which separates an alias in predict routes).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
NAME_LENGTH = 128
# A model id's shape (a UUID): no name may have it, so /v2/models/{name} can tell the two apart.
ID_SHAPE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# An alias: a letter, then letters, digits, '_' and '-' (`production`, `staging`, `champion`).
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
ALIAS_LENGTH = 64
DESCRIPTION_LENGTH = 5000
# Version numbers are 32-bit integers in the database (a larger one names no version).
MAX_VERSION = 2**31 - 1
# The alias /v2/models/{name} serves when no version is given.
DEFAULT_ALIAS = "production"


class Conflict(Exception):
    """The change contradicts the registry's state (a taken name, an aliased version)."""


class NoSuchVersion(LookupError):
    """A version number the registered model does not have (the body referred to it)."""


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the tenant and the first characters of the API key used."""

    tenant_id: str
    key_prefix: str | None = None


@dataclass(frozen=True)
class Resolved:
    """What a name (with an alias or a version) serves: the trained model and its version."""

    name: str
    version: int
    model_id: str


def shaped_like_id(name: str) -> bool:
    """Whether `name` has a model id's shape (such names are refused, and read as model ids)."""
    return ID_SHAPE.fullmatch(name) is not None


def missing(name: str, what: str = "") -> NotFound:
    """404: no registered model `name` for this tenant, or (`what`) no such part of it; the
    error's `kind` is "registered model" only in the first case."""
    error = NotFound(what or "registered model", name)
    message = (
        f"registered model {name!r} has no {what}" if what else f"no registered model {name!r}"
    )
    error.args = (message,)
    return error


def _record(
    session: Session, row: RegisteredModel, actor: Actor, action: str, **details: Any
) -> None:
    session.add(
        RegistryEvent(
            registered_model_id=row.id,
            action=action,
            details=details,
            tenant_id=actor.tenant_id,
            key_prefix=actor.key_prefix,
        )
    )


def _named(tenant_id: str, name: str) -> Select[RegisteredModel]:
    return scoped(RegisteredModel, tenant_id, RegisteredModel.name == name)


def get(session: Session, tenant_id: str, name: str, *, lock: bool = False) -> RegisteredModel:
    """The tenant's registered model called `name`; `NotFound` for any other tenant's."""
    query = _named(tenant_id, name)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise missing(name)
    return row


def create(session: Session, actor: Actor, name: str, description: str | None) -> RegisteredModel:
    """Register a new name (no versions yet); `Conflict` if the tenant already has it."""
    if session.scalar(_named(actor.tenant_id, name)) is not None:
        raise Conflict(f"a registered model named {name!r} already exists")
    row = RegisteredModel(tenant_id=actor.tenant_id, name=name, description=description)
    row.last_version = 0
    session.add(row)
    session.flush()  # the unique (tenant, name) constraint settles a race here
    _record(session, row, actor, "created", description=description)
    return row


def find(session: Session, tenant_id: str, name: str) -> RegisteredModel | None:
    """The tenant's registered model called `name`, or None."""
    return session.scalar(_named(tenant_id, name))


def versions_of_model(session: Session, tenant_id: str, model_id: str) -> list[tuple[str, int]]:
    """The (name, version) pairs under which the tenant registered this trained model."""
    query = (
        select(RegisteredModel.name, ModelVersion.version)
        .join(ModelVersion, ModelVersion.registered_model_id == RegisteredModel.id)
        .where(RegisteredModel.tenant_id == tenant_id, ModelVersion.model_id == model_id)
        .order_by(RegisteredModel.name, ModelVersion.version)
    )
    return [(name, version) for name, version in session.execute(query)]


def listing(
    session: Session, tenant_id: str, *, limit: int, cursor: str | None
) -> tuple[list[RegisteredModel], str | None]:
    """A page of the tenant's registered models, newest first."""
    return page(session, RegisteredModel, tenant_id, limit=limit, cursor=cursor)


def describe(session: Session, actor: Actor, name: str, description: str | None) -> RegisteredModel:
    """Change a registered model's description."""
    row = get(session, actor.tenant_id, name, lock=True)
    before, row.description, row.updated_at = row.description, description, utcnow()
    _record(session, row, actor, "updated", description={"from": before, "to": description})
    return row


def remove(session: Session, actor: Actor, name: str) -> None:
    """Delete a registered model with its versions, aliases and history (the trained models
    stay)."""
    row = get(session, actor.tenant_id, name, lock=True)
    session.delete(row)


def versions(session: Session, row: RegisteredModel) -> Sequence[ModelVersion]:
    """The model's versions, oldest first."""
    query = select(ModelVersion).where(ModelVersion.registered_model_id == row.id)
    return session.scalars(query.order_by(ModelVersion.version)).all()


def aliases(session: Session, row: RegisteredModel) -> dict[str, int]:
    """The model's aliases and the version each points at."""
    query = select(ModelAlias.alias, ModelAlias.version).where(
        ModelAlias.registered_model_id == row.id
    )
    return {alias: version for alias, version in session.execute(query.order_by(ModelAlias.alias))}


def add_version(session: Session, actor: Actor, name: str, model_id: str) -> ModelVersion:
    """Register the tenant's trained model as the next version (1, 2, ...; numbers of deleted
    versions are not given again); `NotFound` for a model that is not the tenant's."""
    row = get(session, actor.tenant_id, name, lock=True)
    owned(session, Model, model_id, actor.tenant_id, columns=(Model.job_id,))
    # One UPDATE takes the next number: concurrent registrations wait on this row's lock.
    session.execute(
        update(RegisteredModel)
        .where(RegisteredModel.id == row.id)
        .values(last_version=RegisteredModel.last_version + 1, updated_at=utcnow())
    )
    session.refresh(row, ["last_version"])
    version = ModelVersion(registered_model_id=row.id, version=row.last_version, model_id=model_id)
    session.add(version)
    session.flush()
    _record(session, row, actor, "version_added", version=version.version, model_id=model_id)
    return version


def find_version(session: Session, row: RegisteredModel, number: int) -> ModelVersion | None:
    if not 1 <= number <= MAX_VERSION:
        return None
    return session.get(ModelVersion, (row.id, number))


def version_of(session: Session, row: RegisteredModel, number: int) -> ModelVersion:
    found = find_version(session, row, number)
    if found is None:
        raise missing(row.name, f"version {number}")
    return found


def delete_version(session: Session, actor: Actor, name: str, number: int) -> None:
    """Delete a version; `Conflict` while an alias points at it."""
    row = get(session, actor.tenant_id, name, lock=True)
    found = version_of(session, row, number)
    pointing = sorted(a for a, v in aliases(session, row).items() if v == number)
    if pointing:
        raise Conflict(
            f"version {number} of {name!r} is what {', '.join(pointing)} points at; "
            "move or delete the alias first"
        )
    session.delete(found)
    row.updated_at = utcnow()
    _record(session, row, actor, "version_deleted", version=number, model_id=found.model_id)


def set_alias(session: Session, actor: Actor, name: str, alias: str, number: int) -> int | None:
    """Point `alias` at version `number` (creating or moving it in one statement); the version
    it pointed at before, if any. `NoSuchVersion` if the model has no such version."""
    row = get(session, actor.tenant_id, name, lock=True)
    if find_version(session, row, number) is None:
        raise NoSuchVersion(f"registered model {name!r} has no version {number}")
    before = aliases(session, row).get(alias)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    statement = insert(ModelAlias).values(
        registered_model_id=row.id, alias=alias, version=number, updated_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["registered_model_id", "alias"],
            set_={"version": number, "updated_at": now},
        )
    )
    row.updated_at = now
    _record(session, row, actor, "alias_set", alias=alias, version=number, previous=before)
    return before


def delete_alias(session: Session, actor: Actor, name: str, alias: str) -> None:
    """Remove an alias; `NotFound` if the model has none by that name."""
    row = get(session, actor.tenant_id, name, lock=True)
    before = aliases(session, row).get(alias)
    if before is None:
        raise missing(name, f"alias {alias!r}")
    session.execute(
        delete(ModelAlias).where(
            ModelAlias.registered_model_id == row.id, ModelAlias.alias == alias
        )
    )
    row.updated_at = utcnow()
    _record(session, row, actor, "alias_deleted", alias=alias, version=before)


def history(
    session: Session, row: RegisteredModel, *, limit: int, before: int | None
) -> tuple[list[RegistryEvent], int | None]:
    """The model's changes, newest first: a page of `limit`, and the next page's cursor."""
    query = select(RegistryEvent).where(RegistryEvent.registered_model_id == row.id)
    if before is not None:
        query = query.where(RegistryEvent.id < before)
    events = list(session.scalars(query.order_by(RegistryEvent.id.desc()).limit(limit + 1)))
    cursor = events[limit - 1].id if len(events) > limit else None
    return events[:limit], cursor


def resolve(
    session: Session,
    tenant_id: str,
    name: str,
    *,
    alias: str | None = None,
    version: int | None = None,
) -> Resolved:
    """The trained model `name@alias` or `name` version `version` serves, in one query;
    `NotFound` saying which part is missing."""
    query = (
        select(ModelVersion.version, ModelVersion.model_id)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.registered_model_id)
        .where(RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == name)
    )
    if alias is not None:
        query = query.join(
            ModelAlias,
            (ModelAlias.registered_model_id == ModelVersion.registered_model_id)
            & (ModelAlias.version == ModelVersion.version),
        ).where(ModelAlias.alias == alias)
    else:
        if version is None or not 1 <= version <= MAX_VERSION:
            raise missing(get(session, tenant_id, name).name, f"version {version}")
        query = query.where(ModelVersion.version == version)
    found = session.execute(query).first()
    if found is not None:
        return Resolved(name, found.version, found.model_id)
    row = get(session, tenant_id, name)  # NotFound for the name itself
    raise missing(row.name, f"alias {alias!r}" if alias is not None else f"version {version}")
