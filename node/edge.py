"""The node's listener protocol: the first request on a connection decides who serves it.

Like every listener's, it first waits for a complete request head, within the head deadline and
counted against the cap of core/web/heads.py (`HeadGuard`); then:

* A WebSocket upgrade on `/ws` is answered here (origin, draining and token checks, then `101`),
  and the transport is handed to a `WsConnection` for the rest of its life: no HTTP request
  object, handler task or aiohttp reader stays behind for a connection that may idle for hours.
* A connection that starts with `POST /api/publish` goes to `core/web/fastpath.py`, which serves
  a backend's stream of pipelined publishes without aiohttp's per-request objects.
* Everything else (SSE, the rest of the server API, probes, metrics, pages) goes to aiohttp
  unchanged: its request handler takes over the transport with the bytes read so far. An upgrade
  that arrives later on such a keep-alive connection (proxies that pool upstream connections send
  them so) is answered by aiohttp and then served by the same `WsConnection` (`handle_ws`).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from typing import Any

from aiohttp import web

from herald.core.auth import Principal
from herald.core.protocol.codec import SUBPROTOCOLS, codec_for_subprotocol
from herald.core.protocol.errors import Unauthorized
from herald.core.protocol.handshake import Head, HeadError, accept, choose_subprotocol, parse_head, upgrade_error
from herald.core.protocol.session import Session
from herald.core.web.api import ApiContext
from herald.core.web.fastpath import PUBLISH_LINE, PublishConnection
from herald.core.web.heads import HeadGate, HeadGuard, ProtocolFactory
from herald.core.web.http import http_error, json_error
from herald.core.web.serve import Edge

from .runtime import RUNTIME, NodeRuntime
from .ws import WsConnection

__all__ = ["EdgeProtocol", "edge_factory", "handle_ws"]

_WS_LINES = (b"GET /ws ", b"GET /ws?")
_NOT_AN_UPGRADE = "expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)"


class UpgradeRefused(Exception):
    def __init__(self, status: int, slug: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.slug, self.message, self.reason = status, slug, message, reason


def admit_upgrade(
    rt: NodeRuntime, origin: str | None, host: str, token: str | None, now: float, forwarded_proto: str | None = None
) -> Principal | None:
    """The checks before a `101`, in order: origin, draining, token (none: first-message auth)."""
    if not rt.origin_allowed(origin, host, forwarded_proto):
        raise UpgradeRefused(403, "forbidden", "origin not allowed", "origin")
    if rt.draining:
        raise UpgradeRefused(503, "draining", "node is draining: connect to another node", "draining")
    if token is None:
        return None
    try:
        return rt.verify(token, now)
    except Unauthorized as exc:
        raise UpgradeRefused(401, "unauthorized", str(exc), "unauthorized") from None


def open_connection(
    rt: NodeRuntime,
    transport: Any,
    principal: Principal | None,
    subprotocol: str | None,
    ip: str,
    now: float,
    *,
    greeting: bytes = b"",
    previous: asyncio.BaseProtocol | None = None,
) -> None:
    """The handshake passed: `transport` now belongs to a new WsConnection, which sends
    `greeting` (the 101, unless aiohttp sent it) with its first frames."""
    session = Session(
        secrets.token_urlsafe(9),
        rt.node_id,
        codec_for_subprotocol(subprotocol),
        rt.limits,
        rt.verify,
        now,
        principal,
        on_error=rt.count_error,
    )
    conn = WsConnection(rt, transport, session, ip, previous)
    transport.set_protocol(conn)
    conn.start(greeting)


class EdgeProtocol(HeadGuard):
    __slots__ = ("rt", "api")

    def __init__(self, rt: NodeRuntime, api: ApiContext, gate: HeadGate, fallback: ProtocolFactory) -> None:
        super().__init__(gate, fallback)
        self.rt = rt
        self.api = api

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # peers that vanish (NAT, power loss) are noticed by the kernel
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        super().connection_made(transport)

    def head_complete(self) -> None:
        buf = self.buf
        if buf.startswith(PUBLISH_LINE):
            return self._publisher()
        if not buf.startswith(_WS_LINES):
            return self.hand_off()
        try:
            head = parse_head(buf)
        except HeadError:
            return self.hand_off()  # aiohttp answers malformed requests (400, the JSON error body)
        if head is None or not head.upgrade or head.path != "/ws":
            return self.hand_off()  # e.g. a plain GET /ws: aiohttp's route explains
        return self._upgrade(head, bytes(buf[head.body_start :]))

    def _publisher(self) -> None:
        buf, self.buf = bytes(self.buf), bytearray()
        conn = PublishConnection(self.api, self.fallback, self.transport, self.gate)
        self.transport.set_protocol(conn)  # type: ignore[union-attr]
        conn.data_received(buf)

    def _refuse(
        self, status: int, slug: str, message: str, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        if reason is not None:
            self.rt.metrics.refused.labels(reason).inc()
        self.transport.write(http_error(status, slug, message, headers))  # type: ignore[union-attr]
        self.transport.close()  # type: ignore[union-attr]

    def _upgrade(self, head: Head, pending: bytes) -> None:
        rt, transport = self.rt, self.transport
        assert transport is not None
        self.buf = bytearray()
        problem = upgrade_error(head)
        if problem is not None:
            status, message = problem
            extra = {"Sec-WebSocket-Version": "13"} if status == 426 else None
            return self._refuse(status, "upgrade_required" if status == 426 else "bad_request", message, headers=extra)
        h = head.headers
        now = time.time()
        try:
            principal = admit_upgrade(
                rt,
                h.get("origin"),
                h.get("host", ""),
                rt.token_from(h.get("authorization"), head.query("token"), head.cookie("herald_token")),
                now,
                h.get("x-forwarded-proto"),
            )
        except UpgradeRefused as refused:
            return self._refuse(refused.status, refused.slug, refused.message, refused.reason)
        subprotocol = choose_subprotocol(head, SUBPROTOCOLS)
        peer = transport.get_extra_info("peername")
        open_connection(
            rt,
            transport,
            principal,
            subprotocol,
            peer[0] if isinstance(peer, tuple) else "?",
            now,
            greeting=accept(head, subprotocol),
        )
        if pending:  # frames the client sent right behind its request
            transport.get_protocol().data_received(pending)  # type: ignore[attr-defined]
        return None


async def handle_ws(request: web.Request) -> web.StreamResponse:
    """`GET /ws` when it reaches aiohttp: a later request on a keep-alive connection, or not an
    upgrade at all. aiohttp answers the handshake; then the connection is a WsConnection like any
    other, which passes the connection's end back to aiohttp (that ends this handler)."""
    rt = request.app[RUNTIME]
    ws = web.WebSocketResponse(protocols=SUBPROTOCOLS, autoping=False, compress=False)
    if not ws.can_prepare(request).ok:
        return json_error(400, "bad_request", _NOT_AN_UPGRADE)
    now = time.time()
    token = rt.token_from(
        request.headers.get("Authorization"), request.query.get("token"), request.cookies.get("herald_token")
    )
    try:
        principal = admit_upgrade(
            rt, request.headers.get("Origin"), request.host, token, now, request.headers.get("X-Forwarded-Proto")
        )
    except UpgradeRefused as refused:
        rt.metrics.refused.labels(refused.reason).inc()
        return json_error(refused.status, refused.slug, refused.message)
    await ws.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        return ws
    open_connection(rt, transport, principal, ws.ws_protocol, request.remote or "?", now, previous=request.protocol)
    await asyncio.get_running_loop().create_future()  # cancelled by aiohttp when the connection ends
    return ws


def edge_factory(rt: NodeRuntime, api: ApiContext) -> Edge:
    """For `serve_until_signal`: every connection starts with the edge."""
    return lambda fallback, gate: lambda: EdgeProtocol(rt, api, gate, fallback)
