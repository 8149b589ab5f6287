"""A Server-Sent Events stream parser, without I/O (the WHATWG event-stream rules that matter here).

Bytes go in with :meth:`SseParser.feed`, complete events come out. An `id:` field updates
`last_id` even when its block has no data, as EventSource does, so a stream that announces its
cursor in a data-less block is resumable from it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SseEvent", "SseParser"]


class SseEvent(NamedTuple):
    id: str | None
    event: str
    data: str


class SseParser:
    __slots__ = ("_buf", "last_id", "retry_ms", "comments")

    def __init__(self) -> None:
        self._buf = b""
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # maybe half of a CRLF: wait for the next chunk
                self._buf = buf
                return []
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self._buf = buf.split(b"\n\n")
        events = []
        for block in blocks:
            event = self._block(block)
            if event is not None:
                events.append(event)
        return events

    def _block(self, block: bytes) -> SseEvent | None:
        kind = "message"
        data: list[str] = []
        for raw in block.split(b"\n"):
            if not raw:
                continue
            if raw[0] == 0x3A:  # ':' a comment
                self.comments += 1
                continue
            name, sep, value = raw.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value.decode("utf-8", "replace"))
            elif name == b"event":
                kind = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\0" not in value:
                    self.last_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self.retry_ms = int(value)
        if not data:
            return None
        return SseEvent(self.last_id, kind, "\n".join(data))
