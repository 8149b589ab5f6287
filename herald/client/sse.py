"""The Server-Sent Events transport (`GET /events`, CONTRACT §6) on aiohttp: receive only.

One stream carries a fixed set of channels (`channel=` parameters; the personal channel is always
included) from the positions in `Last-Event-ID`. Changing the set means opening a new stream with
the cursor of where the client is, which resumes every channel with no gap and no duplicate.
Events become the same frames as on the WebSocket; an `event: reconnect` advisory followed by the
end of the stream is reported as close code 1012, any other end as 1006.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import aiohttp
import orjson

from herald.core.protocol.closecodes import CloseCode
from herald.core.protocol.errors import ProtocolError

from .config import ClientConfig, Endpoint
from .errors import NotSupported, error_for
from .eventstream import EventStreamParser, SseComment, SseEvent
from .policy import ABNORMAL, code_for_http_status
from .transport import INVALID, Closed, Inbound, OpenFailed

__all__ = ["SseTransport", "CURSOR_ONLY"]

#: The `type` of an Inbound that only moves the cursor (an `id:` line outside any event).
CURSOR_ONLY = "_cursor"
_MAX_ERROR_BODY = 16 << 10


class SseTransport:
    kind: Literal["ws", "sse"] = "sse"

    def __init__(
        self,
        http: aiohttp.ClientSession,
        endpoint: Endpoint,
        token: str | None,
        channels: Sequence[str],
        cursor: str,
        config: ClientConfig,
    ) -> None:
        self.url = endpoint.events
        self.channels = list(channels)
        self._http = http
        self._token = token
        self._cursor = cursor
        self._config = config
        self._resp: aiohttp.ClientResponse | None = None
        self._parser = EventStreamParser()
        self._early: list[SseEvent | SseComment] = []
        self._closed: Closed | None = None
        self._advised: int | None = None

    @property
    def closed(self) -> Closed:
        return self._closed or Closed(ABNORMAL, "stream ended")

    def _end(self) -> None:
        if self._closed is None:
            self._closed = (
                Closed(CloseCode.SERVICE_RESTART, "reconnect advisory", self._advised)
                if self._advised is not None
                else Closed(ABNORMAL, "stream ended")
            )

    async def open(self) -> dict[str, Any]:
        cfg = self._config
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._cursor:
            headers["Last-Event-ID"] = self._cursor
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.sse_read_timeout)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                resp = await self._http.get(
                    self.url, params=[("channel", ch) for ch in self.channels], headers=headers, timeout=timeout
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise OpenFailed(ABNORMAL, f"cannot connect: {exc!r}"[:200]) from exc
        if resp.status != 200:
            message = await _error_message(resp)
            raise OpenFailed(
                code_for_http_status(resp.status), message, status=resp.status, error=error_for(resp.status, message)
            )
        if not resp.content_type.startswith("text/event-stream"):
            resp.close()
            raise OpenFailed(ABNORMAL, f"not an event stream: {resp.content_type!r}", status=resp.status)
        self._resp = resp
        client = None
        try:  # the opening block (`retry:` and a `: herald <client id>` comment) comes with the headers
            async with asyncio.timeout(cfg.connect_timeout):
                while client is None and not self._early:
                    chunk = await resp.content.readany()
                    if not chunk:
                        break
                    for item in self._parser.feed(chunk):
                        if isinstance(item, SseComment) and item.text.startswith("herald ") and client is None:
                            client = item.text[len("herald ") :]
                        else:
                            self._early.append(item)
        except (aiohttp.ClientError, OSError, TimeoutError, ProtocolError):
            pass  # frames() finds the stream's state out
        return {"client": client}

    async def frames(self) -> AsyncIterator[Inbound]:
        resp = self._resp
        assert resp is not None
        parser = self._parser
        cursor: str | None = None
        try:
            items, self._early = self._early, []
            while True:
                for item in items:
                    if isinstance(item, SseEvent):
                        cursor = item.id
                        yield self._inbound(item)
                if parser.last_event_id != cursor:  # an `id:` without data: the position moved
                    cursor = parser.last_event_id
                    yield Inbound({"type": CURSOR_ONLY}, cursor)
                chunk = await resp.content.readany()
                if not chunk:
                    break
                items = parser.feed(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError, ProtocolError) as exc:
            if self._closed is None and self._advised is None:
                self._closed = Closed(ABNORMAL, f"stream failed: {exc!r}"[:200])
        finally:
            self._end()
            resp.close()

    def _inbound(self, item: SseEvent) -> Inbound:
        try:
            frame = orjson.loads(item.data)
        except orjson.JSONDecodeError:
            return Inbound({"type": INVALID, "message": f"event {item.event!r} is not JSON"}, item.id)
        if not isinstance(frame, dict):
            return Inbound({"type": INVALID, "message": f"event {item.event!r} is not an object"}, item.id)
        frame.setdefault("type", item.event)
        if frame["type"] == "reconnect":
            after = frame.get("after_ms")
            self._advised = int(after) if isinstance(after, (int, float)) else 0
        return Inbound(frame, item.id)

    async def send(self, obj: dict[str, Any]) -> None:
        raise NotSupported(f"{obj.get('type')} needs the WebSocket transport; this client is on SSE")

    async def close(self) -> None:
        if self._closed is None:
            self._closed = Closed(1000, "closed by the client")
        if self._resp is not None:
            self._resp.close()


async def _error_message(resp: aiohttp.ClientResponse) -> str:
    """The `message` of the server's JSON error body, or the HTTP reason."""
    try:
        body = orjson.loads(await resp.content.read(_MAX_ERROR_BODY))
        message = body["error"]["message"]
        return str(message) if message else f"HTTP {resp.status}"
    except (aiohttp.ClientError, OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP {resp.status} {resp.reason or ''}".strip()
    finally:
        resp.close()
