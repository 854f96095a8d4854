"""The model registry over HTTP: request bodies, the acting key, the registry's errors as HTTP
errors, and each registered model as clients see it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from flask import current_app, g
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import model_registry as registry
from core.models import ApiKey, RegisteredModel, RegistryEvent
from core.schema import NO_NUL, Id, Strict
from service.errors import ApiError
from service.params import validated
from service.schemas import AliasOut, ModelVersionOut, RegisteredModelOut, RegistryEventOut, iso

S = TypeVar("S", bound=Strict)


def _not_an_id(name: str) -> str:
    if registry.shaped_like_id(name):
        raise PydanticCustomError("name_like_id", "must not have a model id's shape (a UUID)")
    return name


Name = Annotated[
    str,
    Field(min_length=1, max_length=registry.NAME_LENGTH, pattern=registry.NAME_PATTERN),
    AfterValidator(_not_an_id),
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
        current_app.extensions["trainsvc.registry"].clear()  # this process sees it at once
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


class ResolveCache:
    """What names resolved to in this process, each kept `ttl` seconds (0: nothing kept)."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._items: dict[Hashable, tuple[float, registry.Resolved]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> registry.Resolved | None:
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, key: Hashable, value: registry.Resolved) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def resolve(
    session: Callable[[], Session],
    tenant_id: str,
    name: str,
    *,
    alias: str | None = None,
    version: int | None = None,
) -> registry.Resolved:
    """What the tenant's `name@alias` (or version) serves: from this process's cache (kept
    REGISTRY_CACHE_SECONDS) or one query. `session` is called only on a miss."""
    cache: ResolveCache = current_app.extensions["trainsvc.registry"]
    key = (tenant_id, name, alias, version)
    found = cache.get(key)
    if found is None:
        found = registry.resolve(session(), tenant_id, name, alias=alias, version=version)
        cache.put(key, found)
    return found


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
