"""The text/event-stream format: one event, or the keepalive comment."""

from __future__ import annotations

import json
from typing import Any

from service.jsonutil import finite

KEEPALIVE = ": keepalive\n\n"


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One event in the text/event-stream format (data is JSON on a single line)."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    payload = json.dumps(finite(data), allow_nan=False, separators=(",", ":"))
    return f"{head}data: {payload}\n\n"
