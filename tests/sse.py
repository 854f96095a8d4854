"""Reading Server-Sent Events in tests: split a text/event-stream body into events."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    event: str  # "status", "epoch", or "comment" for a `: ...` line
    data: Any = None
    id: str | None = None


def parse_block(block: str) -> Event | None:
    """One event from the lines between two blank lines."""
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        if line.startswith(":"):
            return Event("comment", line[1:].strip())
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
    if not fields:
        return None
    data = json.loads(fields["data"]) if "data" in fields else None
    return Event(fields.get("event", "message"), data, fields.get("id"))


def events(chunks: Iterable[str | bytes]) -> Iterator[Event]:
    """Events from a stream of text chunks, as they complete."""
    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event = parse_block(block)
            if event is not None:
                yield event
