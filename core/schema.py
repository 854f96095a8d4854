"""The base of every validating model: unknown fields refused, strict JSON types, no NaN or
Infinity, immutable."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class Strict(BaseModel):
    # strict: a string is not a number, a boolean is not an integer (JSON types as sent).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# Text the database stores or looks up: PostgreSQL refuses NUL in text, so it is refused here, on
# every database alike.
Text = Annotated[str, AfterValidator(_no_nul)]
