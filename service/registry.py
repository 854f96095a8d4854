"""The model registry over HTTP: request bodies, the acting key, the registry's errors as HTTP
errors, and each registered model as clients see it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from flask import g
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import model_registry as registry
from core.models import ApiKey, RegisteredModel, RegistryEvent
from core.schema import NO_NUL, Id, Strict
from service.errors import ApiError
from service.params import validated
from service.schemas import AliasOut, ModelVersionOut, RegisteredModelOut, RegistryEventOut, iso

T = TypeVar("T")
S = TypeVar("S", bound=Strict)

Name = Annotated[
    str,
    Field(min_length=1, max_length=registry.NAME_LENGTH, pattern=registry.NAME_PATTERN),
]
Alias = Annotated[
    str,
    Field(min_length=1, max_length=registry.ALIAS_LENGTH, pattern=registry.ALIAS_PATTERN),
]
Description = Annotated[str, Field(max_length=registry.DESCRIPTION_LENGTH), NO_NUL]


class CreateRegisteredModel(Strict):
    name: Name
    description: Description | None = None


class UpdateRegisteredModel(Strict):
    description: Description | None


class CreateVersion(Strict):
    model_id: Id


class SetAlias(Strict):
    version: int = Field(ge=1, le=2**31 - 1)


class PathName(Strict):
    name: Name


class PathAlias(Strict):
    alias: Alias


def body(model: type[S], payload: Any) -> S:
    """The JSON body read as `model`; 422 naming each problem."""
    if not isinstance(payload, dict):
        raise ApiError(
            422,
            "the body must be a JSON object",
            details=[{"field": "$", "message": "expected an object"}],
        )
    return validated(model.model_validate, payload)


def path_name(name: str) -> str:
    """A registered model's name from the path; 422 if no name could be written so."""
    return validated(PathName.model_validate, {"name": name}).name


def path_alias(alias: str) -> str:
    return validated(PathAlias.model_validate, {"alias": alias}).alias


def actor(session: Session, tenant_id: str) -> registry.Actor:
    """The tenant making a change, and the prefix of the API key it used."""
    digest = g.get("key_digest")
    prefix = None
    if digest is not None:
        prefix = session.scalar(select(ApiKey.prefix).where(ApiKey.key_hash == digest))
    return registry.Actor(tenant_id, prefix)


@contextmanager
def change(session: Session) -> Iterator[Session]:
    """One transaction for a change and its history entry: both are written, or neither.

    The registry's refusals become HTTP errors: a taken name or an aliased version 409, an
    alias to a missing version 422.
    """
    try:
        yield session
        session.commit()
    except registry.Conflict as exc:
        session.rollback()
        raise ApiError(409, str(exc)) from None
    except registry.NoSuchVersion as exc:
        session.rollback()
        raise ApiError(
            422, str(exc), details=[{"field": "version", "message": "no such version"}]
        ) from None
    except IntegrityError:
        session.rollback()  # a concurrent request created the same name first
        raise ApiError(409, "the registered model changed meanwhile (the name is taken)") from None
    except BaseException:
        session.rollback()
        raise


def run(session: Session, work: Callable[[], T]) -> T:
    with change(session):
        return work()


def model_out(session: Session, row: RegisteredModel) -> RegisteredModelOut:
    """A registered model as clients see it: its aliases and latest version."""
    versions = registry.versions(session, row)
    return RegisteredModelOut(
        name=row.name,
        description=row.description,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        latest_version=versions[-1].version if versions else None,
        aliases=[AliasOut(alias=a, version=v) for a, v in registry.aliases(session, row).items()],
    )


def versions_out(session: Session, row: RegisteredModel) -> list[ModelVersionOut]:
    pointing: dict[int, list[str]] = {}
    for alias, version in registry.aliases(session, row).items():
        pointing.setdefault(version, []).append(alias)
    return [
        ModelVersionOut(
            name=row.name,
            version=v.version,
            model_id=v.model_id,
            created_at=iso(v.created_at),
            aliases=pointing.get(v.version, []),
        )
        for v in registry.versions(session, row)
    ]


def event_out(event: RegistryEvent) -> RegistryEventOut:
    return RegistryEventOut(
        id=event.id,
        action=event.action,
        details=event.details,
        tenant=event.tenant_id,
        key_prefix=event.key_prefix,
        at=iso(event.at),
    )
