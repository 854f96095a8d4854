"""JSON in and out: bodies nested at most MAX_JSON_DEPTH deep, checked before the parser recurses;
answers that never carry bare NaN or Infinity (non-finite floats become null)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
from flask import Request, Response
from flask.json.provider import DefaultJSONProvider

from service.errors import ApiError

# The deepest nesting of arrays and objects a request body may have (a job spec needs about 6).
MAX_JSON_DEPTH = 64
# Each byte's step in depth: +1 for an opening bracket, -1 for a closing one, 0 for the rest.
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")], _STEP[list(b"]}")] = 1, -1
_CHUNK = 1 << 20
_BACKSLASH, _QUOTE = ord("\\"), ord('"')


class BadJSON(ValueError):
    """A JSON text refused, with a reason fit to show: malformed, nested too deep, a huge number."""


def json_depth(data: bytes, stop: int | None = None) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets in strings do not count).

    Vectorized and linear, whatever the text (no regular expression that could backtrack);
    counting ends once the depth passes `stop`.
    """
    text = np.frombuffer(data, np.uint8)
    deepest = level = run = quotes = 0  # carried from chunk to chunk
    for start in range(0, len(text), _CHUNK):
        chunk = text[start : start + _CHUNK]
        quote, slash = chunk == _QUOTE, chunk == _BACKSLASH
        if run or slash.any():
            # A quote after an odd run of backslashes is escaped (`run` ended the last chunk).
            index = np.arange(len(chunk))
            runs = index - np.maximum.accumulate(np.where(slash, -1 - run, index))
            quote[0] &= run % 2 == 0
            quote[1:] &= runs[:-1] % 2 == 0
            run = int(runs[-1])
        # A bracket after an odd number of unescaped quotes is inside a string.
        seen = np.cumsum(quote, dtype=np.int64) + quotes
        steps = _STEP[chunk]
        steps[seen % 2 == 1] = 0
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(levels.max()))
        quotes, level = int(seen[-1]), int(levels[-1])
        if stop is not None and deepest > stop:
            break
    return deepest


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """Decode JSON nested at most MAX_JSON_DEPTH deep; `BadJSON` saying why it cannot be read."""
    encoding = json.detect_encoding(text) if isinstance(text, bytes) else "utf-8"
    if isinstance(text, bytes) and encoding not in ("utf-8", "utf-8-sig"):
        try:  # UTF-16 or UTF-32: scanned as UTF-8, where a quote or bracket is one byte
            text = text.decode(encoding)
        except UnicodeDecodeError:
            raise BadJSON("the JSON is not valid Unicode text") from None
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    # Few enough brackets cannot nest too deep: most bodies skip the scan (costly when small).
    few = raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH
    if not few and json_depth(raw, stop=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BadJSON(
            f"the JSON nests arrays and objects more than {MAX_JSON_DEPTH} deep "
            f"(at most {MAX_JSON_DEPTH} levels are accepted)"
        )
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError as exc:
        raise BadJSON(
            f"the JSON is not valid: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise BadJSON("the JSON is not valid Unicode text") from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise BadJSON(f"the JSON is not valid: {exc}") from None
        raise BadJSON(
            f"the JSON has a number of more than {sys.get_int_max_str_digits()} digits"
        ) from None


def finite(value: Any) -> Any:
    """A copy of `value` with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# One compact encoder, made once, for `json_answer`.
_ANSWER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def json_answer(obj: Any) -> Response:
    """`jsonify(obj)` for the prediction routes, whose answers are plain JSON types: one encoder
    made once rather than Flask's provider making one per call (13-20 us of a one-row
    prediction's p50: `benchmarks.predict_breakdown`). Non-finite floats become null, as
    FiniteJSONProvider makes them."""
    try:
        text = _ANSWER.encode(obj)
    except ValueError:
        text = _ANSWER.encode(finite(obj))
    return Response(text + "\n", mimetype="application/json")


class FiniteJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        try:
            return json.dumps(obj, allow_nan=False, **kwargs)
        except ValueError:
            return json.dumps(finite(obj), allow_nan=False, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Decode a request body (or any JSON) nested at most MAX_JSON_DEPTH deep."""
        return loads(s, **kwargs)


class JSONRequest(Request):
    """A request whose unreadable JSON body answers 400 saying why (415 if it is not JSON)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            return super().on_json_loading_failed(e)
        reason = str(e) if isinstance(e, BadJSON) else "the JSON is not valid"
        raise ApiError(400, f"the request body cannot be read: {reason}")
