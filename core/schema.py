"""The base of every validating model: unknown fields refused, strict JSON types, no NaN or
Infinity, immutable. And the text types the database can take: no NUL, no longer than a column."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    # strict: a string is not a number, a boolean is not an integer (JSON types as sent).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain a NUL character")
    return value


# Text the database stores or looks up: PostgreSQL refuses NUL in text, so it is refused here, on
# every database alike. A length limit goes before it: Annotated[str, Field(...), NO_NUL].
NO_NUL = AfterValidator(_no_nul)
Text = Annotated[str, NO_NUL]
# A row's id (jobs, models, datasets: String(36) columns, a UUID): a longer string names nothing.
ID_LENGTH = 36
Id = Annotated[str, Field(min_length=1, max_length=ID_LENGTH), NO_NUL]
