"""`POST /api/publish` on a keep-alive connection, served without aiohttp's per-request objects.

A backend publishing per-user messages sends thousands of small publishes a second over a few
pipelined keep-alive connections; for them the HTTP framework costs more than the publish. The
node's edge hands such a connection (its first request line is `POST /api/publish`) to
`PublishConnection`, which answers each publish itself, in order, with the same checks and the
same answers as the aiohttp route (`core/web/api.publish_one`). The first request it does not
serve itself — another path, chunked bodies, `Expect`, HTTP/1.0, a body over the limit — and
everything after it is handed to aiohttp once the earlier answers are out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from http import HTTPStatus
from typing import Any

import orjson
import structlog

from herald.core.protocol.errors import HeraldError, ProtocolError, Unauthorized
from herald.core.protocol.handshake import MAX_HEAD, HeadError, parse_head

from .api import ApiContext, publish_one
from .http import API_KEY_HINT
from .serve import ProtocolFactory, hand_off

__all__ = ["PublishConnection", "PUBLISH_LINE"]

log = structlog.get_logger("herald.api")

PUBLISH_LINE = b"POST /api/publish "
_HAND_OFF = object()  # queue marker: the rest of the connection goes to aiohttp
_QUEUE_HIGH = 256  # queued requests: stop reading above this...
_QUEUE_LOW = 64  # ...and resume below this
_BATCH = 64  # pipelined publishes started together


def _error(slug: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": slug, "message": message}})


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = HTTPStatus(status).phrase.encode()
    return b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b" % (
        status, reason, len(body), b"" if keep_alive else b"Connection: close\r\n", body)


class PublishConnection(asyncio.Protocol):
    __slots__ = ("ctx", "fallback", "transport", "buf", "queue", "worker", "handing_off", "paused")

    def __init__(self, ctx: ApiContext, fallback: ProtocolFactory, transport: Any) -> None:
        self.ctx = ctx
        self.fallback = fallback
        self.transport = transport
        self.buf = b""
        self.queue: deque[Any] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.handing_off = False
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.handing_off:
            self._parse()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.clear()  # a publish in progress completes; its answer has nowhere to go

    def _parse(self) -> None:
        buf, pos = self.buf, 0
        while pos < len(buf):
            try:
                head = parse_head(buf[pos:pos + MAX_HEAD + 1])  # enough to tell "too large"
            except HeadError:
                self._hand_off_from(pos)  # aiohttp answers malformed and oversized requests
                break
            if head is None:
                break  # wait for the rest of the head
            h = head.headers
            length = h.get("content-length", "")
            if (head.method != "POST" or head.path != "/api/publish" or head.query_string or head.version != "1.1"
                    or "transfer-encoding" in h or "expect" in h or not length.isdigit()
                    or int(length) > self.ctx.max_body):
                self._hand_off_from(pos)  # aiohttp serves these (other routes, 413, chunked, 100-continue...)
                break
            start, size = pos + head.body_start, int(length)
            if len(buf) - start < size:
                break
            pos = start + size
            self._enqueue((h.get("authorization", ""), buf[start:pos], "close" not in h.get("connection", "").lower()))
        self.buf = buf[pos:]

    def _hand_off_from(self, pos: int) -> None:
        self.handing_off = True
        self.buf = self.buf[pos:]
        if not self.paused:  # nothing more is read until aiohttp has the connection
            self.paused = True
            self.transport.pause_reading()
        self._enqueue(_HAND_OFF)

    def _enqueue(self, item: Any) -> None:
        self.queue.append(item)
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        elif len(self.queue) > _QUEUE_HIGH and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    async def _work(self) -> None:
        """Answer queued requests in order. The publishes of requests already queued (pipelined)
        start together: they enter the engine in request order, so they keep their order on
        each channel, and share the engine's batches; their answers leave in one write."""
        try:
            while self.queue:
                if self.queue[0] is _HAND_OFF:
                    self._hand_off()
                    return
                batch = []
                while self.queue and self.queue[0] is not _HAND_OFF and len(batch) < _BATCH:
                    batch.append(self.queue.popleft())
                    if not batch[-1][2]:  # Connection: close ends the connection after it
                        self.queue.clear()
                if self.paused and not self.handing_off and len(self.queue) < _QUEUE_LOW:
                    self.paused = False
                    self.transport.resume_reading()
                if len(batch) == 1:
                    answers = [await self._publish(*batch[0])]
                else:
                    answers = await asyncio.gather(*(self._publish(*item) for item in batch))
                if self.transport.is_closing():
                    return
                self.transport.write(b"".join(answers))
                if not batch[-1][2]:
                    self.transport.close()
                    return
        finally:
            self.worker = None

    async def _publish(self, authorization: str, body: bytes, keep_alive: bool) -> bytes:
        try:
            if not self.ctx.key_matches(authorization):
                raise Unauthorized(API_KEY_HINT)
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise ProtocolError("body is not valid JSON") from None
            return _response(200, orjson.dumps(await publish_one(self.ctx, obj)), keep_alive)
        except HeraldError as exc:
            return _response(exc.code, _error(exc.slug, str(exc) or exc.slug), keep_alive)
        except Exception:
            log.exception("api.publish.failed")
            return _response(500, _error("internal_error", "internal error"), keep_alive)

    def _hand_off(self) -> None:
        buf, self.buf = self.buf, b""
        if self.paused:
            self.transport.resume_reading()
        hand_off(self.transport, self.fallback, buf)
