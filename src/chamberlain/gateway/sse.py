"""Server-Sent Events as MCP's streamable HTTP uses them: split a byte stream into whole events, read their data.

WHATWG HTML "Server-sent events" §9.2.6: lines end with CRLF, LF or CR; an empty line ends an event; `data:` lines
are joined with LF. The gateway cuts streams only at event boundaries, so a client never sees half an event.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")


class EventTooLarge(Exception):
    pass


async def split_events(chunks: AsyncIterator[bytes], max_event_bytes: int) -> AsyncIterator[bytes]:
    """Yields complete events (terminator included) from arbitrary chunks. Raises EventTooLarge."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := _EVENT_END.search(buffer, start)) is not None:
            yield buffer[start : end.end()]
            start = end.end()
        buffer = buffer[start:]
        if len(buffer) > max_event_bytes:
            raise EventTooLarge
    if buffer.strip():
        yield buffer + b"\n\n"  # a final event the upstream did not terminate


def event_data(event: bytes) -> bytes | None:
    """The event's data field, or None for an event without data (a comment, a keep-alive, a bare id)."""
    data = [line[5:].removeprefix(b" ") for line in _LINE.split(event) if line.startswith(b"data:")]
    if not data:
        return None
    return b"\n".join(data)


def message_event(data: bytes) -> bytes:
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"
