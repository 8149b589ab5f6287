"""The state one edge node shares between its handlers: config, engine, hub, limits, connections.

Admission decisions (origin, draining, node/IP/user limits) live here so WebSocket and SSE apply
the same rules; each transport maps a refusal to its own wire form.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from herald import __version__
from herald.core.auth import Authenticator
from herald.core.config import NamespaceOptions, NodeConfig
from herald.core.engine.base import Engine, PresenceEntry, leave_frame
from herald.core.protocol.closecodes import CloseCode
from herald.core.protocol.envelope import ChannelName, namespace_of
from herald.core.protocol.errors import HeraldError
from herald.core.protocol.handshake import origin_allowed
from herald.core.protocol.session import SessionLimits
from herald.core.tasks import TaskSet

from .hub import Hub
from .metrics import NodeMetrics

if TYPE_CHECKING:
    from .sse import SseConnection
    from .ws import WsConnection

__all__ = ["NodeRuntime", "RUNTIME", "Refusal"]

log = structlog.get_logger("herald.node")


class Refusal(HeraldError):
    """A connection refused by a limit: `close_code` for WebSocket, `status` for HTTP."""

    def __init__(self, reason: str, close_code: CloseCode, status: int, message: str) -> None:
        super().__init__(message)
        self.reason, self.close_code, self.status = reason, close_code, status
        self.code = status


class NodeRuntime:
    def __init__(self, config: NodeConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.node_id = config.effective_node_id()
        self.metrics = NodeMetrics(self.node_id)
        self.msgs_in_ws = self.metrics.messages_in.labels("ws")  # the WebSocket hot path's children
        self.ws_accepted = self.metrics.accepted.labels("ws")
        self.ws_connections = self.metrics.connections.labels("ws")
        self.hub = Hub(self.node_id, engine, self.metrics)
        self.auth = Authenticator(config.jwt, leeway=0.0)
        self.verify = self.auth.verify  # bound once: every Session keeps a reference
        self.count_error = self._count_error
        if not config.dev and config.jwt_algorithm == "HS256" and len((config.jwt_secret or "").encode()) < 32:
            log.warning("auth.secret.short", advice="use an HS256 secret of at least 32 bytes")
        self.tasks = TaskSet()
        self.namespace_options = config.namespace_resolver()
        self.limits = SessionLimits(
            max_subscriptions=config.max_subscriptions,
            client_rate=config.client_rate,
            client_burst=config.client_burst,
            ping_interval=config.ping_interval,
            idle_timeout=config.idle_timeout,
            auth_timeout=config.auth_timeout,
            max_reply_size=max(config.max_message_size, 1_048_576),
            allow_publish=lambda ns: self.namespace_options(ns).allow_publish,
        )
        self.ws: dict[str, WsConnection] = {}
        self.sse: dict[str, SseConnection] = {}
        self.per_ip: Counter[str] = Counter()
        self.draining = False
        self.drain_task: asyncio.Task[int] | None = None
        self.started = time.time()
        self.on_missed_deliveries: Callable[[], None] = lambda: None  # set by the app (node/drain.py)

    # --- helpers ------------------------------------------------------------------------------
    def namespace(self, channel: str) -> NamespaceOptions:
        return self.namespace_options(namespace_of(channel))

    @property
    def connection_count(self) -> int:
        return len(self.ws) + len(self.sse)

    def connections(self) -> list[WsConnection | SseConnection]:
        return [*self.ws.values(), *self.sse.values()]

    @property
    def state(self) -> str:
        if not self.draining:
            return "ready"
        return "drained" if self.drain_task is not None and self.drain_task.done() else "draining"

    def origin_allowed(self, origin: str | None, host: str, forwarded_proto: str | None = None) -> bool:
        """A browser's `Origin` must be allowed, or the node's own (scheme, host and port compared)."""
        return origin_allowed(origin, host, self.config.allowed_origins, forwarded_proto)

    @staticmethod
    def token_from(authorization: str | None, query_token: str | None, cookie_token: str | None) -> str | None:
        """A client's token: `Authorization: Bearer`, else `?token=`, else the `herald_token` cookie."""
        if authorization and authorization[:7].lower() == "bearer ":
            return authorization[7:].strip()
        return query_token or cookie_token or None

    # --- admission ----------------------------------------------------------------------------
    def admit(self, ip: str) -> None:
        """Node-level and IP-level limits for a new connection; raises Refusal."""
        cfg = self.config
        if self.draining:
            raise Refusal("draining", CloseCode.SERVICE_RESTART, 503, "node is draining: connect to another node")
        if self.connection_count >= cfg.max_connections:
            raise Refusal("node_full", CloseCode.TRY_AGAIN_LATER, 503, "node is full: try again later")
        if cfg.max_connections_per_ip and self.per_ip[ip] >= cfg.max_connections_per_ip:
            raise Refusal("ip_limit", CloseCode.TRY_AGAIN_LATER, 503, "too many connections from this address")

    async def acquire_user(self, user: str, client: str) -> None:
        if not await self.engine.user_acquire(user, client, self.config.max_connections_per_user):
            raise Refusal("user_limit", CloseCode.TOO_MANY_CONNECTIONS, 429, "too many connections for this user")

    def _count_error(self, code: int) -> None:
        self.metrics.errors.labels(str(code)).inc()

    def refused(self, refusal: Refusal) -> None:
        self.metrics.refused.labels(refusal.reason).inc()
        log.info("conn.refused", reason=refusal.reason)

    # --- presence -----------------------------------------------------------------------------
    async def presence_join(self, channel: ChannelName, entry: PresenceEntry) -> None:
        opts = self.namespace(channel)
        if not opts.presence or channel.startswith("user:"):
            return
        await self.engine.presence_add(channel, entry)
        if opts.join_leave:
            await self.engine.signal(channel, {"type": "join", "channel": channel, **entry.to_wire()})

    async def presence_leave(self, channel: ChannelName, entry: PresenceEntry) -> None:
        opts = self.namespace(channel)
        if not opts.presence or channel.startswith("user:"):
            return
        await self.engine.presence_remove(channel, entry.client)
        if opts.join_leave:
            await self.engine.signal(channel, leave_frame(channel, entry))

    async def presence_status(self, channels: list[str], entry: PresenceEntry, personal: ChannelName) -> None:
        for channel in channels:
            if channel != personal and self.namespace(channel).presence:
                await self.engine.presence_add(channel, entry)  # type: ignore[arg-type]
                await self.engine.signal(channel, _status_frame(channel, entry))  # type: ignore[arg-type]
        await self.engine.signal(personal, _status_frame(personal, entry))

    # --- membership ---------------------------------------------------------------------------
    @property
    def member(self) -> str:
        return f"node:{self.node_id}"

    def status(self) -> dict[str, Any]:
        """What the control plane sees of this node (GET /admin/cluster, the dashboard)."""
        m, sample = self.metrics, self.metrics.registry.get_sample_value
        return {
            "role": "node",
            "id": self.node_id,
            "state": self.state,
            "version": __version__,
            "started": self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "connections": {"ws": len(self.ws), "sse": len(self.sse)},
            "max_connections": self.config.max_connections,
            "channels": self.hub.channel_count,
            "inbox": self.engine.backlog(self.node_id),
            "counters": {
                "messages_in": sum(sample("herald_messages_in_total", {"transport": t}) or 0 for t in ("ws", "sse")),
                "messages_out": m.messages_out.value,
                "published": m.api_published.value,
            },
            "latency": {"bounds": list(m.latency.bounds), "counts": list(m.latency.counts)},
        }

    async def heartbeat_loop(self, period: float = 1.0) -> None:
        """Tell the cluster this node is alive, with its status, once a `period`. If the control
        plane had cleaned this node up as dead (it was paused), deliveries meanwhile were not
        routed here: every client is asked to reconnect and resume from its own offsets."""
        while True:
            try:
                if await self.engine.heartbeat(self.member, self.status()):
                    self.on_missed_deliveries()
            except HeraldError:
                log.warning("node.heartbeat.failed")
            await asyncio.sleep(period)

    # --- periodic work ------------------------------------------------------------------------
    async def ticker(self) -> None:
        """Once a second: session timers (pings, expiry, idleness), SSE heartbeats, gauges."""
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for conn in list(self.ws.values()):
                conn.tick(now)
            for sconn in list(self.sse.values()):
                sconn.tick(now)
            self.metrics.channels.set(self.hub.channel_count)
            self.metrics.inbox.set(self.engine.backlog(self.node_id))


RUNTIME = web.AppKey("herald_node_runtime", NodeRuntime)


def _status_frame(channel: str, entry: PresenceEntry) -> dict[str, Any]:
    """`user_status` (CONTRACT §5) plus the channel it came through, so a client in several
    channels with the user can tell the copies apart."""
    return {"type": "user_status", "userId": entry.user, "status": entry.status, "channel": channel}
