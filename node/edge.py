"""The node's listener protocol: the first request on a connection decides who serves it.

* A WebSocket upgrade on `/ws` is answered here (origin, draining and token checks, then `101`),
  and the transport is handed to a `WsConnection` for the rest of its life: no HTTP request
  object, handler task or aiohttp reader stays behind for a connection that may idle for hours.
* A connection that starts with `POST /api/publish` goes to `core/web/fastpath.py`, which serves
  a backend's stream of pipelined publishes without aiohttp's per-request objects.
* Everything else (SSE, the rest of the server API, probes, metrics, pages) goes to aiohttp
  unchanged: its request handler takes over the transport with the bytes read so far.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

from herald.core.protocol.codec import SUBPROTOCOLS, codec_for_subprotocol
from herald.core.protocol.errors import Unauthorized
from herald.core.protocol.handshake import (
    Head,
    HeadError,
    accept,
    choose_subprotocol,
    http_error,
    parse_head,
    upgrade_error,
)
from herald.core.protocol.session import Session
from herald.core.web.api import ApiContext
from herald.core.web.fastpath import PUBLISH_LINE, PublishConnection
from herald.core.web.serve import ProtocolFactory, hand_off

from .runtime import NodeRuntime
from .ws import WsConnection

__all__ = ["EdgeProtocol", "edge_factory"]

_WS_LINES = (b"GET /ws ", b"GET /ws?")
_LINES = (*_WS_LINES, PUBLISH_LINE)
_UPGRADE_SLUGS = {405: "method_not_allowed", 426: "upgrade_required"}


class EdgeProtocol(asyncio.Protocol):
    __slots__ = ("rt", "api", "fallback", "transport", "buf")

    def __init__(self, rt: NodeRuntime, api: ApiContext, fallback: ProtocolFactory) -> None:
        self.rt = rt
        self.api = api
        self.fallback = fallback
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf = self.buf + data
        line = next((line for line in _LINES if buf.startswith(line)), None)
        if line is None:
            if not any(line.startswith(buf) for line in _LINES):
                self._hand_off()
            return None  # else: wait for the rest of the request line
        if line is PUBLISH_LINE:
            return self._publisher()
        try:
            head = parse_head(buf)
        except HeadError:
            return self._hand_off()  # aiohttp answers malformed and oversized requests
        if head is None:
            return None  # wait for the rest of the head
        if not head.upgrade or head.path != "/ws":
            return self._hand_off()  # e.g. a plain GET /ws: aiohttp's route explains
        return self._upgrade(head, buf[head.body_start:])

    def eof_received(self) -> bool:
        return False

    def _hand_off(self) -> None:
        buf, self.buf = self.buf, b""
        hand_off(self.transport, self.fallback, buf)  # type: ignore[arg-type]

    def _publisher(self) -> None:
        buf, self.buf = self.buf, b""
        conn = PublishConnection(self.api, self.fallback, self.transport)
        self.transport.set_protocol(conn)  # type: ignore[union-attr]
        conn.data_received(buf)

    def _refuse(self, status: int, slug: str, message: str, reason: str | None = None,
                headers: dict[str, str] | None = None) -> None:
        if reason is not None:
            self.rt.metrics.refused.labels(reason).inc()
        self.transport.write(http_error(status, slug, message, headers))  # type: ignore[union-attr]
        self.transport.close()  # type: ignore[union-attr]

    def _upgrade(self, head: Head, pending: bytes) -> None:
        rt, transport = self.rt, self.transport
        assert transport is not None
        self.buf = b""
        problem = upgrade_error(head)
        if problem is not None:
            status, message = problem
            extra = {"Sec-WebSocket-Version": "13"} if status == 426 else None
            return self._refuse(status, _UPGRADE_SLUGS.get(status, "bad_request"), message, headers=extra)
        h = head.headers
        if not rt.origin_allowed(h.get("origin"), h.get("host", "")):
            return self._refuse(403, "forbidden", "origin not allowed", "origin")
        if rt.draining:
            return self._refuse(503, "draining", "node is draining: connect to another node", "draining")
        now = time.time()
        token = rt.token_from(h.get("authorization"), head.query("token"), head.cookie("herald_token"))
        principal = None
        if token is not None:
            try:
                principal = rt.verify(token, now)
            except Unauthorized as exc:
                return self._refuse(401, "unauthorized", str(exc), "unauthorized")
        subprotocol = choose_subprotocol(head, SUBPROTOCOLS)
        peer = transport.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "?"
        session = Session(secrets.token_urlsafe(9), rt.node_id, codec_for_subprotocol(subprotocol), rt.limits,
                          rt.verify, now, principal, on_error=rt.count_error)
        conn = WsConnection(rt, transport, session, ip)
        transport.write(accept(head, subprotocol))
        transport.set_protocol(conn)
        conn.start(pending)
        return None


def edge_factory(rt: NodeRuntime, api: ApiContext) -> Callable[[ProtocolFactory], ProtocolFactory]:
    """For `serve_until_signal`: wrap aiohttp's protocol factory with the edge."""
    return lambda fallback: lambda: EdgeProtocol(rt, api, fallback)
