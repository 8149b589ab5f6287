"""`GET /ws`: a thin adapter between aiohttp's WebSocket and the sans-I/O Session.

Read a frame → `session.receive()` → run the returned command against the engine → write
`session.frames_to_send()`. Published messages bypass the session's encoder: the hub hands every
subscriber the same pre-encoded frame, written straight to the transport.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from herald.core.engine.base import PresenceEntry
from herald.core.protocol.closecodes import ADVISORY_SLOW, Advisory, CloseCode
from herald.core.protocol.codec import SUBPROTOCOLS, codec_for_subprotocol
from herald.core.protocol.envelope import (
    Auth,
    Chat,
    Command,
    History,
    Presence,
    Publication,
    Publish,
    Subscribe,
    Unsubscribe,
    Who,
    personal_channel,
)
from herald.core.protocol.errors import HeraldError, PayloadTooBig, Unauthorized
from herald.core.protocol.frames import PING_FRAME, ws_frame
from herald.core.protocol.session import Session, Tick

from herald.core.web.http import json_error
from .hub import Encoded, Subscriber
from .runtime import RUNTIME, NodeRuntime, Refusal

__all__ = ["handle_ws", "WsConnection"]

log = structlog.get_logger("herald.node.ws")

_CLOSE_TIMEOUT = 5.0
_MAX_WHO = 1000
_MAX_HISTORY = 1000


class WsConnection(Subscriber):
    __slots__ = ("rt", "ws", "transport", "session", "ip", "opcode", "user", "_closing", "_buffer_limit")

    def __init__(self, rt: NodeRuntime, ws: web.WebSocketResponse, transport: Any, session: Session, ip: str) -> None:
        self.rt = rt
        self.ws = ws
        self.transport = transport
        self.session = session
        self.ip = ip
        self.opcode = session.codec.opcode
        self.user = session.user
        self._closing = False
        self._buffer_limit = rt.config.send_buffer

    # --- output -------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if self._closing or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self._buffer_limit:
            self.rt.metrics.slow.inc()
            self.session.close(ADVISORY_SLOW.close_code, "slow consumer")
            self.close(ADVISORY_SLOW)

    def flush(self) -> None:
        frames = self.session.frames_to_send()
        if frames:
            op = self.opcode
            self.write(b"".join([ws_frame(op, f) for f in frames]))
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
            return
        self.flush()

    def close(self, advisory: Advisory | None = None, after_ms: int = 0) -> None:
        """Close with the session's close code (or the advisory's), once, without blocking."""
        if self._closing:
            return
        self._closing = True
        if advisory is not None:
            if not self.transport.is_closing():
                self.transport.write(ws_frame(self.opcode, self.session.codec.encode(
                    {"type": "reconnect", "reason": advisory.reason, "after_ms": after_ms})))
            self.session.close(advisory.close_code, advisory.reason)
        code = self.session.close_code or CloseCode.NORMAL
        self.rt.tasks.spawn(self._close(int(code), self.session.close_reason), name="ws.close")

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.transport.abort() if not self.transport.is_closing() else None

    # --- commands -----------------------------------------------------------------------------
    def presence_entry(self) -> PresenceEntry:
        s = self.session
        info = s.principal.info if s.principal is not None else None
        return PresenceEntry(s.client_id, s.user, s.node_id, s.status, info)

    async def run(self, cmd: Command) -> None:
        s, rt = self.session, self.rt
        engine = rt.engine
        try:
            if isinstance(cmd, Subscribe):
                await self._subscribe(cmd)
            elif isinstance(cmd, Unsubscribe):
                if s.unsubscribe(cmd):
                    await rt.hub.remove(cmd.channel, self)
                    await rt.presence_leave(cmd.channel, self.presence_entry())
            elif isinstance(cmd, Publish):
                res = await engine.publish(cmd.channel, cmd.data, event=cmd.event, sender=s.user)
                rt.metrics.published.labels("client").inc()
                s.reply(cmd, {"type": "published", "channel": cmd.channel, "offset": res.offset})
            elif isinstance(cmd, Chat):
                res = await engine.publish(personal_channel(cmd.recipient), {"text": cmd.text}, event="chat",
                                           sender=s.user)
                rt.metrics.published.labels("chat").inc()
                s.reply(cmd, {"type": "sent", "offset": res.offset})
            elif isinstance(cmd, Presence):
                await rt.presence_status(list(s.subs), self.presence_entry(), s.personal)
                if cmd.id is not None:  # extension: a command with an id gets an answer
                    s.reply(cmd, {"type": "presence", "status": s.status})
            elif isinstance(cmd, Who):
                entries = await engine.presence(cmd.channel)
                if len(entries) > _MAX_WHO:
                    s.send_error(cmd.id, PayloadTooBig(f"more than {_MAX_WHO} clients: use /api/presence/<channel>/stats"))
                else:
                    s.reply(cmd, {"type": "who", "channel": cmd.channel, "clients": [e.to_wire() for e in entries]})
            elif isinstance(cmd, History):
                limit = _MAX_HISTORY if cmd.limit is None else min(cmd.limit, _MAX_HISTORY)
                res = await engine.history(cmd.channel, since=cmd.since, limit=limit)
                s.reply(cmd, {"type": "history", "channel": cmd.channel, "epoch": res.epoch, "offset": res.offset,
                              "recovered": res.recovered, "messages": [m.envelope() for m in res.messages]})
        except HeraldError as exc:
            s.send_error(cmd.id, exc)
        self.flush()

    async def _subscribe(self, cmd: Subscribe) -> None:
        s, rt = self.session, self.rt
        is_new = s.begin_subscribe(cmd)
        try:
            if is_new:
                await rt.hub.add(cmd.channel, self)
            result = await rt.engine.history(cmd.channel, since=cmd.since)
        except HeraldError as exc:
            if is_new:
                await rt.hub.remove(cmd.channel, self)
            s.cancel_subscribe(cmd, exc, is_new)
            return
        s.complete_subscribe(cmd, result)
        self.flush()  # `subscribed` and the missed messages go out before any join frame
        if is_new:
            await rt.presence_join(cmd.channel, self.presence_entry())

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


async def handle_ws(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if not rt.origin_allowed(request):
        rt.metrics.refused.labels("origin").inc()
        return json_error(403, "forbidden", "origin not allowed")
    if rt.draining:
        rt.metrics.refused.labels("draining").inc()
        return json_error(503, "draining", "node is draining: connect to another node")
    now = time.time()
    token = rt.token_from_request(request)
    principal = None
    if token is not None:
        try:
            principal = rt.verify(token, now)
        except Unauthorized as exc:
            rt.metrics.refused.labels("unauthorized").inc()
            return json_error(401, "unauthorized", str(exc))
    cfg = rt.config
    ws = web.WebSocketResponse(protocols=SUBPROTOCOLS, autoping=False, compress=False,
                               max_msg_size=cfg.max_message_size, timeout=_CLOSE_TIMEOUT)
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws
    ip = request.remote or "?"
    client_id = secrets.token_urlsafe(9)
    session = Session(client_id, rt.node_id, codec_for_subprotocol(ws.ws_protocol), rt.limits, rt.verify, now,
                      principal, on_error=rt.count_error)
    conn = WsConnection(rt, ws, transport, session, ip)
    counted = False
    try:
        try:
            rt.admit(ip)
            if principal is not None:
                await rt.acquire_user(principal.user, client_id)
        except Refusal as refusal:
            rt.refused(refusal)
            await ws.close(code=int(refusal.close_code), message=str(refusal).encode())
            return ws
        except HeraldError as exc:  # the engine is unreachable: the upgrade is done, so close 1011
            await ws.close(code=int(CloseCode.INTERNAL_ERROR), message=exc.slug.encode())
            return ws
        counted = True
        rt.ws[client_id] = conn
        rt.per_ip[ip] += 1
        rt.metrics.accepted.labels("ws").inc()
        rt.metrics.connections.labels("ws").inc()
        try:
            if principal is not None:
                await conn.open()
            conn.flush()
            log.info("ws.connected", client=client_id, user=session.user or None, codec=session.codec.name)
            await _receive_loop(rt, ws, conn, session)
        except HeraldError as exc:  # engine unavailable while registering: the client retries
            session.close(CloseCode.INTERNAL_ERROR, exc.slug)
        if session.close_code is not None and not ws.closed:
            # closed by the server from inside the loop (auth failure, limit): send the code now,
            # before aiohttp finishes the response with a plain 1000
            await conn._close(int(session.close_code), session.close_reason)
    finally:
        if counted:
            rt.ws.pop(client_id, None)
            rt.per_ip[ip] -= 1
            if rt.per_ip[ip] <= 0:
                del rt.per_ip[ip]
            rt.metrics.connections.labels("ws").dec()
            code = session.close_code or ws.close_code or CloseCode.GOING_AWAY
            rt.metrics.closed.labels("ws", str(int(code))).inc()
            log.info("ws.closed", client=client_id, user=session.user or None, code=int(code),
                          duration_ms=int((time.time() - session.opened_at) * 1000),
                          msgs_in=session.msgs_in, msgs_out=session.msgs_out)
            await conn.cleanup()
    return ws


async def _receive_loop(rt: NodeRuntime, ws: web.WebSocketResponse, conn: WsConnection, session: Session) -> None:
    msgs_in = rt.metrics.messages_in.labels("ws")
    while not conn._closing:
        msg = await ws.receive()
        kind = msg.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            msgs_in.inc()
            cmd = session.receive(msg.data, time.time())
            if cmd is not None:
                if isinstance(cmd, Auth):
                    await _first_message_auth(rt, conn, session)
                else:
                    await conn.run(cmd)
            conn.flush()
        elif kind is WSMsgType.PING:
            conn.write(ws_frame(0xA, msg.data))
        elif kind is WSMsgType.PONG:
            session.pong(time.time())
        elif kind is WSMsgType.CLOSE:
            await ws.close()
            return
        else:  # CLOSING, CLOSED, ERROR (aiohttp already sent 1009 / 1007 / 1002)
            if kind is WSMsgType.ERROR and isinstance(getattr(msg.data, "code", None), int):
                session.close(msg.data.code, "protocol error")
            return


async def _first_message_auth(rt: NodeRuntime, conn: WsConnection, session: Session) -> None:
    try:
        await rt.acquire_user(session.principal.user, session.client_id)
    except HeraldError as exc:  # Refusal or engine unavailable: nothing was counted
        if isinstance(exc, Refusal):
            rt.refused(exc)
        session.principal = None
        session.close(getattr(exc, "close_code", CloseCode.INTERNAL_ERROR), str(exc))
        return
    session.authenticated()
    await conn.open()
