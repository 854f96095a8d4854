"""The base of every validating model: unknown fields refused, strict JSON types, no NaN or
Infinity, immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # strict: a string is not a number, a boolean is not an integer (JSON types as sent).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)
