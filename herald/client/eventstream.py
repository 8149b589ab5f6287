"""An incremental `text/event-stream` parser (the WHATWG SSE format), without I/O.

Feed it bytes as they arrive, in chunks of any size; it returns the complete events and comments.
Lines end with LF or CRLF (a lone CR, which Herald never sends, is not a line end here). As in the
spec, `id` is remembered across events (`last_event_id`), an event is dispatched only when it has
`data`, and multi-line data is joined with LF.
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.core.protocol.errors import ProtocolError

__all__ = ["SseEvent", "SseComment", "EventStreamParser"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str  # "message" when the stream named none
    data: str
    id: str | None  # the last event id in force when this event was dispatched


@dataclass(frozen=True, slots=True)
class SseComment:
    text: str


class EventStreamParser:
    __slots__ = ("_buf", "_event", "_data", "last_event_id", "retry_ms", "_max_line")

    def __init__(self, max_line: int = 4 << 20) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []
        self.last_event_id: str | None = None
        self.retry_ms: int | None = None
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[SseEvent | SseComment]:
        """Parse `chunk`; ProtocolError when a line grows past `max_line` bytes."""
        self._buf += chunk
        out: list[SseEvent | SseComment] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            raw, self._buf = self._buf[:end], self._buf[end + 1 :]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            item = self._line(raw.decode("utf-8", errors="replace"))
            if item is not None:
                out.append(item)
        if len(self._buf) > self._max_line:
            raise ProtocolError(f"event stream line longer than {self._max_line} bytes")
        return out

    def _line(self, line: str) -> SseEvent | SseComment | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return SseComment(line[1:].removeprefix(" "))
        name, sep, value = line.partition(":")
        if sep:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event or "message", "\n".join(data), self.last_event_id)
