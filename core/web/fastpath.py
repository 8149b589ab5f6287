"""`POST /api/publish` on a keep-alive connection, served without aiohttp's per-request objects.

A backend publishing per-user messages sends thousands of small publishes a second over a few
pipelined keep-alive connections; for them the HTTP framework costs more than the publish. The
node's edge hands such a connection (its first request line is `POST /api/publish`) to
`PublishConnection`, which answers each publish itself, in order, with the same checks and the
same answers as the aiohttp route (`core/web/api.publish_one`). The first request it does not
serve itself — another path, chunked bodies, `Expect`, HTTP/1.0, a body over the limit — and
everything after it is handed to aiohttp once the earlier answers are out.

Bounded like aiohttp: reading pauses while too much is queued or the client does not read its
answers. Timed like herald's aiohttp handler (core/web/handler.py): a connection idle for the
keep-alive timeout after its last answer is closed, the head of a later request must be complete
within the head timeout of its first byte (and counts against the listener's cap meanwhile), and
a client that half-closes after its requests gets every answer before the connection is closed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import orjson
import structlog

from herald.core.protocol.errors import HeraldError, ProtocolError, Unauthorized
from herald.core.protocol.handshake import HeadError, parse_head

from .api import ApiContext, publish_one
from .heads import REFUSAL, HeadGate, ProtocolFactory, hand_off
from .http import API_KEY_HINT, error_body, http_response

__all__ = ["PublishConnection", "PUBLISH_LINE"]

log = structlog.get_logger("herald.api")

PUBLISH_LINE = b"POST /api/publish "
_HAND_OFF = object()  # queue marker: the rest of the connection goes to aiohttp
_QUEUE_HIGH = 256  # queued requests: stop reading above this...
_QUEUE_LOW = 64  # ...and resume below this
_QUEUE_BYTES = 1_048_576  # ...or above this many queued body bytes
_BATCH = 64  # pipelined publishes started together


class PublishConnection(asyncio.Protocol):
    __slots__ = (
        "ctx",
        "fallback",
        "transport",
        "gate",
        "buf",
        "head",
        "queue",
        "queued",
        "worker",
        "handing_off",
        "paused",
        "drained",
        "active",
        "answered",
        "head_since",
        "eof",
        "timer",
    )

    def __init__(self, ctx: ApiContext, fallback: ProtocolFactory, transport: Any, gate: HeadGate) -> None:
        self.ctx = ctx
        self.fallback = fallback
        self.transport = transport
        self.gate = gate
        self.buf = bytearray()
        self.head: tuple[str, bool, int, int] | None = None  # parsed head of a request whose body is arriving
        self.queue: deque[Any] = deque()
        self.queued = 0  # body bytes in the queue
        self.worker: asyncio.Task[None] | None = None
        self.handing_off = False
        self.paused = False  # reading paused: too much queued, or handing off
        self.drained: asyncio.Future[None] | None = None  # set while the client does not read its answers
        loop = asyncio.get_running_loop()
        self.active = self.answered = loop.time()  # last bytes in; last answer out (or the hand-in)
        self.head_since: float | None = None  # first byte of a head still incomplete (counted in the gate)
        self.eof = False  # the client half-closed: answer what came, then close
        self.timer = loop.call_at(self.answered + gate.limits.keepalive_timeout, self._check_idle)

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.active = asyncio.get_running_loop().time()
        if not self.handing_off:
            self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.clear()  # a publish in progress completes; its answer has nowhere to go
        self.timer.cancel()
        self._head_done()
        self.resume_writing()

    def eof_received(self) -> bool | None:
        """FIN: nothing more will come. The requests received are answered, then the connection
        is closed (at once when there are none)."""
        self.eof = True
        if self.handing_off or self.worker is not None or self.queue:
            return True
        return None  # nothing to answer (a partial request can no longer complete): close

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.drained is not None:
            if not self.drained.done():
                self.drained.set_result(None)
            self.drained = None

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        now, limits = loop.time(), self.gate.limits
        if self.worker is not None or self.queue:
            due = now + 1.0  # answering: not idle
        elif self.head_since is not None:  # a head arriving: its deadline, or the keep-alive's
            due = min(self.head_since + limits.head_timeout, self.answered + limits.keepalive_timeout)
        elif self.head is not None:  # a body arriving
            due = self.active + limits.keepalive_timeout
        else:
            due = self.answered + limits.keepalive_timeout
        if now >= due:
            self.transport.close()
        else:
            self.timer = loop.call_at(due, self._check_idle)

    def _head_started(self) -> None:
        if self.worker is None and not self.queue:
            if not self.gate.acquire():
                self.transport.write(REFUSAL)
                self.transport.close()
                return
        elif not self.gate.acquire():
            return  # answers are on their way; the head's deadline still applies
        self.head_since = self.active
        due = self.head_since + self.gate.limits.head_timeout
        if self.timer.when() > due:
            self.timer.cancel()
            self.timer = asyncio.get_running_loop().call_at(due, self._check_idle)

    def _head_done(self) -> None:
        if self.head_since is not None:
            self.head_since = None
            self.gate.release()

    # --- requests -----------------------------------------------------------------------------
    def _parse(self) -> None:
        buf, pos = self.buf, 0
        while pos < len(buf):
            if self.head is None:
                try:
                    head = parse_head(buf, pos)
                except HeadError:
                    self._hand_off_later()  # aiohttp answers malformed and oversized requests
                    break
                if head is None:
                    break  # wait for the rest of the head
                h = head.headers
                length = h.get("content-length", "")
                if (
                    head.method != "POST"
                    or head.path != "/api/publish"
                    or head.query_string
                    or head.version != "1.1"
                    or "transfer-encoding" in h
                    or "expect" in h
                    or not length.isdigit()
                    or int(length) > self.ctx.max_body
                ):
                    self._hand_off_later()  # aiohttp serves these (other routes, 413, chunked, 100-continue...)
                    break
                keep_alive = "close" not in h.get("connection", "").lower()
                self.head = (h.get("authorization", ""), keep_alive, head.body_start, int(length))
            authorization, keep_alive, body_start, size = self.head
            start = pos + body_start
            if len(buf) - start < size:
                break  # wait for the rest of the body (the head stays parsed)
            self.head = None
            pos = start + size
            self._enqueue((authorization, bytes(buf[start:pos]), keep_alive))
        if pos:
            del self.buf[:pos]
        if self.head is None and self.buf and not self.handing_off:
            if self.head_since is None:
                self._head_started()
        elif self.head_since is not None:
            self._head_done()

    def _hand_off_later(self) -> None:
        """The rest of the buffer (from the request just seen) goes to aiohttp once the answers
        before it are out."""
        self.handing_off = True
        if not self.paused:  # nothing more is read until aiohttp has the connection
            self.paused = True
            self.transport.pause_reading()
        self._enqueue(_HAND_OFF)

    def _enqueue(self, item: Any) -> None:
        self.queue.append(item)
        if item is not _HAND_OFF:
            self.queued += len(item[1])
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        elif not self.paused and (len(self.queue) > _QUEUE_HIGH or self.queued > _QUEUE_BYTES):
            self.paused = True
            self.transport.pause_reading()

    async def _work(self) -> None:
        """Answer queued requests in order. The publishes of requests already queued (pipelined)
        start together: they enter the engine in request order, so they keep their order on
        each channel, and share the engine's batches; their answers leave in one write."""
        try:
            while self.queue:
                if self.drained is not None:  # the client is not reading its answers: wait
                    await self.drained
                if self.queue[0] is _HAND_OFF:
                    self._hand_off()
                    return
                batch: list[tuple[str, bytes, bool]] = []
                while self.queue and self.queue[0] is not _HAND_OFF and len(batch) < _BATCH:
                    item = self.queue.popleft()
                    self.queued -= len(item[1])
                    batch.append(item)
                    if not item[2]:  # Connection: close ends the connection after it
                        self.queue.clear()
                if (
                    self.paused
                    and not self.handing_off
                    and len(self.queue) < _QUEUE_LOW
                    and self.queued <= _QUEUE_BYTES
                ):
                    self.paused = False
                    self.transport.resume_reading()
                if len(batch) == 1:
                    answers = [await self._publish(*batch[0])]
                else:
                    answers = await asyncio.gather(*(self._publish(*item) for item in batch))
                if self.transport.is_closing():
                    return
                self.transport.write(b"".join(answers))
                self.answered = asyncio.get_running_loop().time()
                if not batch[-1][2]:
                    self.transport.close()
                    return
            if self.eof:  # the client half-closed: everything it sent is answered
                self.transport.close()
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
            return http_response(200, orjson.dumps(await publish_one(self.ctx, obj)), keep_alive=keep_alive)
        except HeraldError as exc:
            return http_response(exc.code, error_body(exc.slug, str(exc) or exc.slug), keep_alive=keep_alive)
        except Exception:
            log.exception("api.publish.failed")
            return http_response(500, error_body("internal_error", "internal error"), keep_alive=keep_alive)

    def _hand_off(self) -> None:
        self.timer.cancel()  # aiohttp keeps its own keep-alive timer
        buf, self.buf = bytes(self.buf), bytearray()
        if self.paused:
            self.transport.resume_reading()
        self._head_done()
        hand_off(self.transport, self.fallback, buf, eof=self.eof)
