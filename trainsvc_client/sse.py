"""A Server-Sent Events parser following the WHATWG event-stream rules."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its type, data, the last event id and the reconnection time (ms)."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None


def iter_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split a byte stream into lines ended by CRLF, LF or CR (a trailing partial line is kept)."""
    buffer = b""
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        if first:
            if len(buffer) < 3 and b"\xef\xbb\xbf".startswith(buffer):
                continue  # wait for the rest of a possible byte-order mark
            buffer = buffer.removeprefix(b"\xef\xbb\xbf")
            first = False
        start = 0
        while True:
            cr = buffer.find(b"\r", start)
            lf = buffer.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                if cr + 1 == len(buffer):
                    break  # a CR at the end of a chunk may be the first half of CRLF
                end = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
                yield buffer[start:cr].decode("utf-8", errors="replace")
                start = end
            else:
                yield buffer[start:lf].decode("utf-8", errors="replace")
                start = lf + 1
        buffer = buffer[start:]
    if buffer.endswith(b"\r"):
        yield buffer[:-1].decode("utf-8", errors="replace")
    elif buffer:
        # An unterminated last line cannot complete an event; yield it so callers may see it.
        yield buffer.decode("utf-8", errors="replace")


def parse_events(
    lines: Iterable[str], last_event_id: str | None = None
) -> Iterator[ServerSentEvent]:
    """Turn event-stream lines into events: a blank line dispatches, `:` lines are comments."""
    event_type = ""
    data: list[str] = []
    retry: int | None = None
    for line in lines:
        if line == "":
            if data:
                yield ServerSentEvent(
                    event=event_type or "message",
                    data="\n".join(data),
                    id=last_event_id,
                    retry=retry,
                )
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event_type = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            if "\0" not in value:
                last_event_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    # End of stream: an event without its terminating blank line is discarded, as the spec says.
