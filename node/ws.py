"""A WebSocket connection after the handshake: an asyncio.Protocol over the raw transport, an
adapter between the client's frames and the sans-I/O Session.

Frames in → `FrameReader` → messages queued → one short-lived task runs them in order against
the engine (`session.receive()`, then the command: `node/commands.py`) → `session.frames_to_send()`
written out.
Published messages bypass the session's encoder: the hub hands every subscriber the same
pre-encoded frame, written straight to the transport. An idle connection holds no task, no
parser buffer and no HTTP request: only this object, its Session and the transport.

The handshake itself is done by `node/edge.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import structlog

from herald.core.engine.base import PresenceEntry
from herald.core.protocol.closecodes import ADVISORY_SLOW, Advisory, CloseCode
from herald.core.protocol.envelope import Auth, Publication
from herald.core.protocol.errors import HeraldError
from herald.core.protocol.frames import OP_CLOSE, OP_PING, OP_PONG, PING_FRAME, ws_frame
from herald.core.protocol.session import Session, Tick
from herald.core.protocol.wsreader import MAX_AUTH_MESSAGE, FrameError, FrameReader, close_payload

from .commands import run_command
from .hub import Encoded, Subscriber
from .runtime import NodeRuntime, Refusal

__all__ = ["WsConnection"]

log = structlog.get_logger("herald.node.ws")

_CLOSE_TIMEOUT = 5.0  # seconds a client gets to answer our close frame
_INBOX_HIGH = 64  # queued client messages: stop reading the socket above this...
_INBOX_LOW = 16  # ...and resume below this
_INBOX_BYTES = 262_144  # ...or above this many queued bytes
_OPEN = object()  # inbox marker: admit the connection (per-user limit, personal channel)
_PEER_CLOSED = object()  # inbox marker: the client's close frame, answered after what it sent before


class WsConnection(Subscriber, asyncio.Protocol):
    __slots__ = (
        "rt",
        "transport",
        "session",
        "ip",
        "opcode",
        "user",
        "_reader",
        "_inbox",
        "_queued",
        "_worker",
        "_closing",
        "_peer_closed",
        "_admitted",
        "_lost",
        "_paused",
        "_peer_code",
        "_abort",
        "_previous",
        "_greeting",
    )

    def __init__(
        self, rt: NodeRuntime, transport: Any, session: Session, ip: str, previous: asyncio.BaseProtocol | None = None
    ) -> None:
        self.rt = rt
        self.transport = transport
        self.session = session
        self.ip = ip
        self.opcode = session.codec.opcode
        self.user = session.user
        # Before authenticating, a connection may send one message the size of an auth message.
        self._reader = FrameReader(
            rt.config.max_message_size, None if session.principal is not None else MAX_AUTH_MESSAGE
        )
        self._inbox: deque[Any] | None = None  # messages waiting for the worker (none when idle)
        self._queued = 0  # bytes in the inbox
        self._worker: asyncio.Task[None] | None = None
        self._closing = False  # our close frame is out (or the transport is gone): nothing more is written
        self._peer_closed = False  # the client sent its close frame: nothing more is read
        self._admitted = False  # past the per-user limit (metrics counted, cleanup due)
        self._lost = False
        self._paused = False
        self._peer_code: int | None = None  # the code of the client's close frame
        self._abort: asyncio.TimerHandle | None = None
        self._previous = previous  # aiohttp's protocol, when aiohttp did the handshake (node/edge.py)
        self._greeting = b""  # the handshake's 101, sent with the first frames (one write, not two)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, greeting: bytes = b"") -> None:
        """This object is now the transport's protocol: apply the node's limits and count the
        connection at once (so a burst of connects cannot overshoot them), then admit it in the
        background. `greeting` (the 101) leaves with the first frames: `connected`, or the close."""
        self._greeting = greeting
        rt = self.rt
        try:
            rt.admit(self.ip)
        except Refusal as refusal:
            rt.refused(refusal)
            self.session.close(refusal.close_code, str(refusal))
            self.close()
            return
        rt.ws[self.session.client_id] = self
        rt.per_ip[self.ip] += 1
        self._enqueue(_OPEN)

    async def _admit(self) -> None:
        s, rt = self.session, self.rt
        if s.principal is not None and not await self._acquire():
            s.frames_to_send()  # the queued `connected` must not go out
            return
        self._admitted = True
        rt.ws_accepted.inc()
        rt.ws_connections.inc()
        if s.principal is not None:
            await self.open()
        log.info("ws.connected", client=s.client_id, user=s.user or None, codec=s.codec.name)

    async def _acquire(self) -> bool:
        """Count the connection against its user's limit; on refusal (or an unreachable engine)
        close with the reason."""
        s = self.session
        try:
            await self.rt.acquire_user(s.user, s.client_id)
        except HeraldError as exc:
            if isinstance(exc, Refusal):
                self.rt.refused(exc)
            s.close(getattr(exc, "close_code", CloseCode.INTERNAL_ERROR), str(exc))
            return False
        return True

    async def _first_message_auth(self) -> None:
        s = self.session
        if not await self._acquire():
            s.principal = None  # nothing was counted for it
            return
        s.authenticated()
        await self.open()

    def connection_lost(self, exc: Exception | None) -> None:
        """What the client sent before it went away still runs (a publish then a hang-up is a
        publish); then the connection is cleaned up."""
        self._lost = self._closing = True
        if self._abort is not None:
            self._abort.cancel()
        if self._worker is None:
            self.rt.tasks.spawn(self._finish(), name="ws.finish")
        # else the worker runs what is queued, then calls _finish()
        if self._previous is not None:  # aiohttp's request handler ends as on any disconnect
            self._previous.connection_lost(exc)

    async def _finish(self) -> None:
        s, rt = self.session, self.rt
        if rt.ws.get(s.client_id) is not self:
            return
        code = s.close_code or self._peer_code or CloseCode.GOING_AWAY
        try:
            if self._admitted:
                rt.ws_connections.dec()
                rt.metrics.closed.labels("ws", str(int(code))).inc()
                log.info(
                    "ws.closed",
                    client=s.client_id,
                    user=s.user or None,
                    code=int(code),
                    duration_ms=int((time.time() - s.opened_at) * 1000),
                    msgs_in=s.msgs_in,
                    msgs_out=s.msgs_out,
                )
                await self.cleanup()
        finally:  # counted until cleaned up: a shutdown waits for this (node/drain.hang_up)
            del rt.ws[s.client_id]
            rt.per_ip[self.ip] -= 1
            if rt.per_ip[self.ip] <= 0:
                del rt.per_ip[self.ip]

    # --- input --------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._lost or self._peer_closed:
            return
        try:
            events = self._reader.feed(data)
        except FrameError as exc:  # the stream is out of step: fail the connection (RFC 6455 §7.1.7)
            self.session.close(exc.code, exc.reason)
            self.close()
            self.transport.close()
            return
        ping = None
        for op, payload in events:
            if op == OP_CLOSE:
                self._on_close_frame(payload)  # type: ignore[arg-type]
                return
            if self._closing:
                continue  # waiting for the client's close frame: nothing else matters
            if op == OP_PING:
                ping = payload  # RFC 6455 §5.5.3: answering the last of several pings is enough
            elif op == OP_PONG:
                self.session.pong(time.time())
            else:
                self.rt.msgs_in_ws.inc()
                self._enqueue(payload)
        if ping is not None and self.session.allow_ping(time.time()):  # pings share the message rate
            self.write(ws_frame(OP_PONG, ping))  # type: ignore[arg-type]

    def _on_close_frame(self, payload: tuple[int | None, str]) -> None:
        code, _reason = payload
        self._peer_code = code
        if self._closing:  # the answer to our close frame
            self.transport.close()
        elif self._worker is None:
            self._answer_close()
        else:  # answer once the messages that came before it have run
            self._peer_closed = True
            self._enqueue(_PEER_CLOSED)

    def _answer_close(self) -> None:
        if not self._closing:
            self._closing = self._peer_closed = True
            self._send(ws_frame(OP_CLOSE, close_payload(self._peer_code or CloseCode.NORMAL)))
        self.transport.close()

    def _enqueue(self, item: Any) -> None:
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(item)
        if isinstance(item, (str, bytes)):
            self._queued += len(item)
        if self._worker is None:
            self._worker = self.rt.tasks.spawn(self._work(), name="ws.work")
        elif not self._paused and (len(self._inbox) > _INBOX_HIGH or self._queued > _INBOX_BYTES):
            self._paused = True
            self.transport.pause_reading()

    async def _work(self) -> None:
        """Run queued messages one at a time, in order; exit when the queue is empty. A close by
        the server drops what is still queued (close() empties the queue)."""
        s = self.session
        try:
            while self._inbox:
                item = self._inbox.popleft()
                if isinstance(item, (str, bytes)):
                    self._queued -= len(item)
                if self._paused and len(self._inbox) < _INBOX_LOW and self._queued <= _INBOX_BYTES:
                    self._paused = False
                    self.transport.resume_reading()
                if not self._inbox:
                    self._inbox = None
                if item is _PEER_CLOSED:
                    self._answer_close()
                    continue
                if self._lost and not self._admitted:
                    break  # gone before it was admitted: it never saw `connected`
                try:
                    if item is _OPEN:
                        await self._admit()
                    else:
                        cmd = s.receive(item, time.time())
                        if isinstance(cmd, Auth):
                            await self._first_message_auth()
                        elif cmd is not None:
                            await run_command(self, cmd)
                except HeraldError as exc:  # the engine is unreachable: the client retries
                    s.close(CloseCode.INTERNAL_ERROR, exc.slug)
                except Exception:  # a bug must cost this connection, not leave it hanging
                    log.exception("ws.command.failed", client=s.client_id)
                    s.close(CloseCode.INTERNAL_ERROR, "internal error")
                self.flush()
        finally:
            self._worker = None
            if self._lost:
                await self._finish()

    # --- output -------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        """Every byte to the client goes through here, the pending 101 first."""
        if self._greeting:
            data, self._greeting = self._greeting + data, b""
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self._closing or transport.is_closing():
            return
        self._send(data)
        if transport.get_write_buffer_size() > self.rt.config.send_buffer:
            self.rt.metrics.slow.inc()
            self.session.close(ADVISORY_SLOW.close_code, "slow consumer")
            self.close(ADVISORY_SLOW)

    def flush(self) -> None:
        frames = self.session.frames_to_send()
        if frames:
            op = self.opcode
            self.write(b"".join([ws_frame(op, f) for f in frames]))
        elif self._greeting:  # admitted without a frame to send (first-message auth): the 101 now
            self.write(b"")
        if self.session.close_code is not None:
            self.close()

    def deliver(self, pub: Publication, enc: Encoded) -> bool:
        if self.session.deliver(pub):
            self.write(enc.ws(self.opcode))
            return True
        if self.session.close_code is not None:
            self.close()
        return False

    def signal(self, enc: Encoded) -> None:
        sub = self.session.subs.get(enc.item.channel)
        if sub is not None and sub.pending is None:
            self.write(enc.ws(self.opcode))

    def disconnect(self, code: int) -> None:
        self.session.close(code, "disconnected by the server")
        self.close()

    def tick(self, now: float) -> None:
        result = self.session.tick(now)
        if result is Tick.PING:
            self.write(PING_FRAME)
        elif result is Tick.CLOSE:
            self.close()
            if self.session.close_code == CloseCode.GOING_AWAY:
                self.transport.close()  # no pong: nobody will answer the close frame
            return
        self.flush()

    def close(self, advisory: Advisory | None = None, after_ms: int = 0) -> None:
        """Send the close frame with the session's close code (or the advisory's), once, without
        blocking; the connection ends when the client answers or after _CLOSE_TIMEOUT."""
        if self._closing:
            return
        transport, s = self.transport, self.session
        if advisory is not None:
            if not transport.is_closing():
                self._send(
                    ws_frame(
                        self.opcode,
                        s.codec.encode({"type": "reconnect", "reason": advisory.reason, "after_ms": after_ms}),
                    )
                )
            s.close(advisory.close_code, advisory.reason)
        self._closing = True
        self._inbox, self._queued = None, 0  # the server closes: what is still queued is dropped
        if self._paused:  # the client's answer to our close frame must be read
            self._paused = False
            transport.resume_reading()
        if transport.is_closing():
            return
        self._send(ws_frame(OP_CLOSE, close_payload(int(s.close_code or CloseCode.NORMAL), s.close_reason)))
        self._abort = asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT, transport.abort)

    # --- commands -----------------------------------------------------------------------------
    def presence_entry(self) -> PresenceEntry:
        s = self.session
        info = s.principal.info if s.principal is not None else None
        return PresenceEntry(s.client_id, s.user, s.node_id, s.status, info)

    async def open(self) -> None:
        """The principal is known and admitted: register the personal channel."""
        self.user = self.session.user
        self.rt.hub.add_user(self)
        await self.rt.hub.add(self.session.personal, self)

    async def cleanup(self) -> None:
        s, rt = self.session, self.rt
        if s.principal is None:
            return
        rt.hub.remove_user(self)
        entry = self.presence_entry()
        for channel in list(s.subs):
            try:
                await rt.hub.remove(channel, self)
                await rt.presence_leave(channel, entry)  # type: ignore[arg-type]
            except HeraldError:
                pass  # the engine is down; control cleans up after crashed nodes
        try:
            await rt.engine.user_release(s.user, s.client_id)
        except HeraldError:
            pass
