"""The request's strings, read through pydantic before any view or query sees them: each route's
query string (a model per route), every path id, the Idempotency-Key. A bad one answers 422 with
`details` naming it; none can carry a NUL or outgrow its column (PostgreSQL refuses both)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from flask import request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from core.models import JOB_STATUSES
from core.schema import ID_LENGTH, NO_NUL, Id, Text
from service.errors import ApiError

MAX_PAGE = 100  # the most rows one page of a listing holds
MAX_EPOCH = 999_999_999  # the most an epoch number may be (?after=, Last-Event-ID)
MAX_TEXT = 200  # a dataset's name or label column, an Idempotency-Key (String(200) columns)
FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_DIGITS = re.compile(r"[0-9]{1,18}")

T = TypeVar("T")
Q = TypeVar("Q", bound="Query")


def _whole(value: Any) -> Any:
    """A whole number in ASCII digits, as an int (no sign, space, '_', '²' or other digit)."""
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise PydanticCustomError("whole_number", "must be a whole number, in digits 0-9")
        return int(value)
    return value


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        if value.lower() not in FLAGS:
            raise PydanticCustomError("flag", "must be true or false (or yes/no, 1/0)")
        return FLAGS[value.lower()]
    return value


def _status(value: str) -> str:
    if value not in JOB_STATUSES:
        raise PydanticCustomError(
            "status", "must be one of {statuses}", {"statuses": ", ".join(JOB_STATUSES)}
        )
    return value


PageSize = Annotated[int, BeforeValidator(_whole), Field(ge=1, le=MAX_PAGE)]
Epoch = Annotated[int, BeforeValidator(_whole), Field(ge=0, le=MAX_EPOCH)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Status = Annotated[str, AfterValidator(_status)]
Label = Annotated[str, Field(max_length=MAX_TEXT), NO_NUL]
Name = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), NO_NUL]


class Query(BaseModel):
    """A route's query parameters; unknown ones are ignored (as they always were)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Cursor(Query):
    cursor: Id | None = None


class Paging(Cursor):
    limit: PageSize = 20


class JobFilter(Paging):
    status: Status | None = None


class Upload(Query):
    """A CSV upload's fields, from the query string or the form: its label column and name."""

    label: Label = ""
    name: Name | None = None


class SignIn(Query):
    next: Text | None = None


class Headers(Query):
    """The request headers a view stores."""

    idempotency_key: Name | None = Field(None, alias="Idempotency-Key")


_IDS: TypeAdapter[dict[str, str]] = TypeAdapter(dict[str, Id])
_FLAGS: TypeAdapter[dict[str, bool]] = TypeAdapter(dict[str, Flag])
_EPOCHS: TypeAdapter[dict[str, int]] = TypeAdapter(dict[str, Epoch])


def validated(
    validate: Callable[[dict[str, Any]], T],
    values: Mapping[str, Any],
    *,
    code: str | None = None,
) -> T:
    """`values` through `validate`; 422 with one {field, message} per problem."""
    try:
        return validate(dict(values))
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(part) for part in e["loc"]) or "$", "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ApiError(422, message, code=code, details=details) from None


def query(model: type[Q], values: Mapping[str, str] | None = None, *, code: str | None = None) -> Q:
    """The query string (or `values`, such as form fields) read as `model`; 422 if it cannot be.

    An empty value is as good as none (`?cursor=` is no cursor).
    """
    given = request.args if values is None else values
    return validated(model.model_validate, {k: v for k, v in given.items() if v != ""}, code=code)


def flag(name: str) -> bool:
    """A true/false query parameter (absent or empty: false)."""
    raw = request.args.get(name) or "false"
    return validated(_FLAGS.validate_python, {name: raw})[name]


def epoch(name: str, raw: str) -> int:
    """An epoch number sent as `name` (`?after=`, `Last-Event-ID`); 422 naming it."""
    return validated(_EPOCHS.validate_python, {name: raw})[name]


def check_request() -> None:
    """Before any view: 422 for a path id (`job_id`, `model_id`, `dataset_id`, any `*_id`) or an
    Idempotency-Key with a NUL or longer than its column can hold."""
    current = request._get_current_object()  # type: ignore[attr-defined]
    view_args = current.view_args
    if view_args:  # a plain loop: this runs before every request
        for name, value in view_args.items():
            if name.endswith("_id") and not (0 < len(value) <= ID_LENGTH and "\x00" not in value):
                ids = {k: v for k, v in view_args.items() if k.endswith("_id")}
                validated(_IDS.validate_python, ids)  # says which, and why
                break
    key = current.environ.get("HTTP_IDEMPOTENCY_KEY")  # headers["Idempotency-Key"]
    if key is not None:
        validated(Headers.model_validate, {"Idempotency-Key": key})
