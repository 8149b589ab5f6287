"""`GET /events`: Server-Sent Events with a resumable cursor (CONTRACT.md §6).

The response is chunked; after the headers, events are written as raw chunks to the transport so
that the shared `event:`/`data:` bytes of a publication are encoded once for every stream.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from herald.core.auth import Principal
from herald.core.engine.base import PresenceEntry
from herald.core.protocol.closecodes import ADVISORY_SLOW, Advisory, CloseCode
from herald.core.protocol.envelope import Position, Publication, personal_channel, validate_channel
from herald.core.protocol.errors import Forbidden, HeraldError, ProtocolError, Unauthorized
from herald.core.protocol.sse import SseStream, channel_tag, comment, decode_cursor, event_tail
from herald.core.web.http import json_error

from .hub import Encoded, Subscriber
from .runtime import RUNTIME, NodeRuntime, Refusal

__all__ = ["handle_events", "SseConnection"]

log = structlog.get_logger("herald.node.sse")


class SseConnection(Subscriber):
    __slots__ = (
        "rt",
        "transport",
        "stream",
        "principal",
        "user",
        "client_id",
        "ip",
        "done",
        "opened_at",
        "_closing",
        "_next_heartbeat",
        "_limit",
        "close_reason",
        "close_code",
        "_held",
    )

    def __init__(
        self, rt: NodeRuntime, transport: Any, principal: Principal, client_id: str, ip: str, now: float
    ) -> None:
        self.rt = rt
        self.transport = transport
        self.stream = SseStream()
        self.principal = principal
        self.user = principal.user
        self.client_id = client_id
        self.ip = ip
        self.opened_at = now
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_reason = "client"
        self.close_code = int(CloseCode.GOING_AWAY)  # the WebSocket code with the same meaning, for metrics
        self._closing = False
        self._held: list[bytes] | None = []  # events delivered before the headers went out
        self._next_heartbeat = now + rt.config.sse_heartbeat
        self._limit = rt.config.send_buffer

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
            return
        transport = self.transport
        if self._closing or transport.is_closing():
            return
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        if transport.get_write_buffer_size() > self._limit:
            self.rt.metrics.slow.inc()
            self.close(ADVISORY_SLOW)

    def opened(self, first: list[bytes]) -> None:
        """The headers are out: write `first`, then what was delivered meanwhile, in order."""
        held, self._held = self._held or [], None
        for data in (*first, *held):
            self.write(data)

    def deliver(self, pub: Publication, enc: Encoded) -> bool:
        data = self.stream.deliver(pub, enc.sse_tail())
        if data is None:
            return False
        self.write(data)
        return True

    def signal(self, enc: Encoded) -> None:
        sub = self.stream.subs.get(enc.item.channel)
        if sub is not None and sub.pending is None:
            self.write(enc.sse_tail())

    def disconnect(self, code: int) -> None:
        self.close_reason, self.close_code = f"disconnected ({code})", code
        self.close()

    def tick(self, now: float) -> None:
        if self.transport.is_closing():
            self.close()
        elif self.principal.exp <= now:
            self.close_reason, self.close_code = "token expired", int(CloseCode.UNAUTHORIZED)
            self.close()
        elif now >= self._next_heartbeat:
            self._next_heartbeat = now + self.rt.config.sse_heartbeat
            self.write(comment("hb"))

    def close(self, advisory: Advisory | None = None, after_ms: int = 0) -> None:
        if self._closing:
            return
        self._closing = True
        if self._held is not None:  # the headers never went out: nothing to say, just hang up
            self.transport.close()
        elif not self.transport.is_closing():
            if advisory is not None:
                self.close_reason, self.close_code = advisory.reason, int(advisory.close_code)
                event = event_tail(
                    "reconnect", orjson.dumps({"type": "reconnect", "reason": advisory.reason, "after_ms": after_ms})
                )
                self.transport.write(b"%x\r\n%b\r\n" % (len(event), event))
            self.transport.write(b"0\r\n\r\n")
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)


def _requested_channels(request: web.Request, principal: Principal, max_channels: int) -> list[str]:
    names = request.query.getall("channel", [])
    personal = personal_channel(principal.user)
    channels: list[str] = [personal]
    for name in names:
        channel = validate_channel(name)
        if channel in channels:
            continue
        if not principal.may_subscribe(channel):
            raise Forbidden(f"not permitted to subscribe to {channel}")
        channels.append(channel)
    if len(channels) > max_channels + 1:
        raise ProtocolError(f"at most {max_channels} channels per stream")
    return channels


async def handle_events(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if not rt.origin_allowed(request.headers.get("Origin"), request.host):
        rt.metrics.refused.labels("origin").inc()
        return json_error(403, "forbidden", "origin not allowed")
    now = time.time()
    token = rt.token_from(
        request.headers.get("Authorization"), request.query.get("token"), request.cookies.get("herald_token")
    )
    try:
        if token is None:
            raise Unauthorized("missing token")
        principal = rt.verify(token, now)
        channels = _requested_channels(request, principal, rt.config.sse_max_channels)
        cursor = decode_cursor(request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or "")
    except HeraldError as exc:
        rt.metrics.refused.labels(exc.slug).inc()
        return json_error(exc.code, exc.slug, str(exc))
    ip = request.remote or "?"
    client_id = secrets.token_urlsafe(9)
    try:
        rt.admit(ip)
        await rt.acquire_user(principal.user, client_id)
    except Refusal as refusal:
        rt.refused(refusal)
        return json_error(refusal.status, refusal.reason, str(refusal))
    except HeraldError as exc:
        return json_error(exc.code, exc.slug, str(exc))

    transport = request.transport
    if transport is None:
        await rt.engine.user_release(principal.user, client_id)
        return web.Response(status=499)
    conn = SseConnection(rt, transport, principal, client_id, ip, now)
    rt.sse[client_id] = conn
    rt.per_ip[ip] += 1
    rt.metrics.accepted.labels("sse").inc()
    rt.metrics.connections.labels("sse").inc()
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    resp.enable_chunked_encoding()
    try:
        # Register every channel and read its history before the stream opens: a client may
        # publish as soon as it sees the headers, and everything from then on must reach it.
        # Publications arriving meanwhile wait in each subscription's buffer.
        since = {ch: cursor.get(channel_tag(ch)) for ch in channels}
        rt.hub.add_user(conn)
        for channel in channels:
            conn.stream.start(channel, since[channel])
            await rt.hub.add(channel, conn)
        events, lost = await _recover(rt, conn, channels, since)
        first = [b"retry: %d\n: herald %b\n\n" % (rt.config.sse_retry_ms, client_id.encode()), *events]
        if lost:
            first.append(
                b"id: "
                + conn.stream.cursor()
                + b"\n"
                + event_tail("recovery", orjson.dumps({"type": "recovery", "recovered": False, "channels": lost}))
            )
        elif not events:
            # An id without data sets the browser's Last-Event-ID without dispatching an event, so
            # a stream that drops before its first message still resumes from where it started.
            first.append(b"id: " + conn.stream.cursor() + b"\n\n")
        await resp.prepare(request)
        conn.opened(first)
        entry = PresenceEntry(conn.client_id, conn.user, rt.node_id, "online", conn.principal.info)
        for channel in channels:
            await rt.presence_join(channel, entry)  # type: ignore[arg-type]
        log.info("sse.connected", client=client_id, user=conn.user, channels=len(channels), resumed=bool(cursor))
        await conn.done
    except HeraldError as exc:  # the engine failed while setting the stream up
        if not resp.prepared:
            return json_error(exc.code, exc.slug, str(exc))
        conn.write(event_tail("error", orjson.dumps({"type": "error", "code": exc.code, "message": str(exc)})))
    finally:
        await _cleanup(rt, conn)
    return resp


async def _recover(
    rt: NodeRuntime, conn: SseConnection, channels: list[str], since: dict[str, Position | None]
) -> tuple[list[bytes], list[str]]:
    """Read every channel's history: the events that fill the gaps, and the channels whose gap
    cannot be filled (they get a `recovery` event)."""
    events: list[bytes] = []
    lost = []
    for channel in channels:
        result = await rt.engine.history(channel, since=since[channel])  # type: ignore[arg-type]
        channel_events, recovered = conn.stream.complete(channel, result, since[channel])
        events.extend(channel_events)
        if not recovered:
            lost.append(channel)
    return events, lost


async def _cleanup(rt: NodeRuntime, conn: SseConnection) -> None:
    conn.close()
    rt.sse.pop(conn.client_id, None)
    rt.per_ip[conn.ip] -= 1
    if rt.per_ip[conn.ip] <= 0:
        del rt.per_ip[conn.ip]
    rt.metrics.connections.labels("sse").dec()
    rt.metrics.closed.labels("sse", str(conn.close_code)).inc()
    rt.hub.remove_user(conn)
    entry = PresenceEntry(conn.client_id, conn.user, rt.node_id)
    log.info(
        "sse.closed",
        client=conn.client_id,
        user=conn.user,
        reason=conn.close_reason,
        duration_ms=int((time.time() - conn.opened_at) * 1000),
        msgs_out=conn.stream.msgs_out,
    )
    try:
        for channel in list(conn.stream.subs):
            await rt.hub.remove(channel, conn)
            await rt.presence_leave(channel, entry)  # type: ignore[arg-type]
        await rt.engine.user_release(conn.user, conn.client_id)
    except HeraldError:
        pass
