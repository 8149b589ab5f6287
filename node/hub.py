"""Local fan-out: which connections of this node hold which channels, and delivery to them.

The engine calls :meth:`Hub.dispatch` with publications in channel order. Each publication is
encoded at most once per wire format (JSON frame, msgpack frame, SSE tail) and the same bytes are
written to every subscriber's transport. Registration with the engine follows the local set: the
first local subscriber registers the node for the channel, the last one leaving unregisters it;
per-channel serialization keeps the engine's view in the order of local changes.

Most channels (and users) of a node have one local subscriber, so the registries keep a lone
subscriber as the value itself and only use a dict once there are two (see `_Registry`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from herald.core.engine.base import Broker
from herald.core.protocol.codec import JSON, MSGPACK
from herald.core.protocol.envelope import Delivery, Disconnect, Order, Publication, Signal
from herald.core.protocol.frames import ws_frame
from herald.core.protocol.sse import event_tail

if TYPE_CHECKING:
    from .metrics import NodeMetrics

__all__ = ["Hub", "Encoded", "Subscriber"]

log = structlog.get_logger("herald.node.hub")


class Encoded:
    """The wire forms of one delivery, each built on first use and then shared."""

    __slots__ = ("item", "_json", "_msgpack", "_sse")

    def __init__(self, item: Publication | Signal) -> None:
        self.item = item
        self._json: bytes | None = None
        self._msgpack: bytes | None = None
        self._sse: bytes | None = None

    def _obj(self) -> dict[str, Any]:
        item = self.item
        return item.envelope() if isinstance(item, Publication) else item.frame

    def ws(self, opcode: int) -> bytes:
        if opcode == 1:
            if self._json is None:
                self._json = ws_frame(1, JSON.encode(self._obj()))
            return self._json
        if self._msgpack is None:
            self._msgpack = ws_frame(2, MSGPACK.encode(self._obj()))
        return self._msgpack

    def sse_tail(self) -> bytes:
        if self._sse is None:
            obj = self._obj()
            event = self.item.event if isinstance(self.item, Publication) else obj["type"]
            self._sse = event_tail(event, JSON.encode(obj))
        return self._sse


class Subscriber:
    """What the hub needs from a connection (implemented by WsConnection and SseConnection)."""

    __slots__ = ()
    user: str

    def deliver(self, pub: Publication, enc: Encoded) -> bool:
        raise NotImplementedError

    def signal(self, enc: Encoded) -> None: ...

    def disconnect(self, code: int) -> None: ...


class _Registry:
    """Key → its subscribers, in the order they were added. A key with one subscriber maps to
    it directly; a second one promotes the value to a dict, and it goes back to one below two."""

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map: dict[str, Subscriber | dict[Subscriber, None]] = {}

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: str) -> bool:
        return key in self._map

    def get(self, key: str) -> Sequence[Subscriber]:
        """A snapshot of `key`'s subscribers (safe to iterate while they change)."""
        value = self._map.get(key)
        if value is None:
            return ()
        return list(value) if isinstance(value, dict) else (value,)

    def add(self, key: str, conn: Subscriber) -> None:
        value = self._map.get(key)
        if value is None:
            self._map[key] = conn
        elif isinstance(value, dict):
            value[conn] = None
        elif value is not conn:
            self._map[key] = {value: None, conn: None}

    def remove(self, key: str, conn: Subscriber) -> bool:
        """Remove `conn` from `key`; True when it was there."""
        value = self._map.get(key)
        if value is conn:
            del self._map[key]
            return True
        if not isinstance(value, dict) or conn not in value:
            return False
        del value[conn]
        if len(value) == 1:
            self._map[key] = next(iter(value))
        return True


class Hub:
    def __init__(self, node_id: str, engine: Broker, metrics: NodeMetrics) -> None:
        self.node_id = node_id
        self.engine = engine
        self.metrics = metrics
        self._channels = _Registry()
        self._registered: set[str] = set()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._users = _Registry()
        self.on_order: Callable[[Order], None] = lambda order: None  # control-plane orders (runtime)

    # --- local registry ---------------------------------------------------------------------
    @property
    def channel_count(self) -> int:
        return len(self._channels)

    async def add(self, channel: str, conn: Subscriber) -> None:
        """Add `conn` locally, then make sure the engine routes `channel` here. On return the
        registration is in effect, so reading history now cannot miss a message."""
        self._channels.add(channel, conn)
        await self._reconcile(channel)

    async def remove(self, channel: str, conn: Subscriber) -> None:
        if self._channels.remove(channel, conn) and channel not in self._channels:
            await self._reconcile(channel)

    def add_user(self, conn: Subscriber) -> None:
        self._users.add(conn.user, conn)

    def remove_user(self, conn: Subscriber) -> None:
        self._users.remove(conn.user, conn)

    async def _reconcile(self, channel: str) -> None:
        lock, users = self._locks.get(channel) or (asyncio.Lock(), 0)
        self._locks[channel] = (lock, users + 1)
        try:
            async with lock:
                want, have = channel in self._channels, channel in self._registered
                if want and not have:
                    await self.engine.subscribe(self.node_id, channel)  # type: ignore[arg-type]
                    self._registered.add(channel)
                elif have and not want:
                    self._registered.discard(channel)
                    await self.engine.unsubscribe(self.node_id, channel)  # type: ignore[arg-type]
        finally:
            lock, users = self._locks[channel]
            if users == 1:
                del self._locks[channel]
            else:
                self._locks[channel] = (lock, users - 1)

    # --- delivery (called by the engine) ------------------------------------------------------
    def dispatch(self, items: Sequence[Delivery]) -> None:
        now_ms = time.time() * 1000
        for item in items:
            if isinstance(item, Publication):
                conns = self._channels.get(item.channel)
                if not conns:
                    continue
                enc = Encoded(item)
                sent = 0
                for conn in conns:
                    try:
                        if conn.deliver(item, enc):
                            sent += 1
                    except Exception:  # one broken connection must not cost the others their message
                        log.exception("hub.deliver.failed", channel=item.channel)
                self.metrics.delivered(sent, (now_ms - item.ts) / 1000.0)
            elif isinstance(item, Signal):
                enc = Encoded(item)
                for conn in self._channels.get(item.channel):
                    conn.signal(enc)
            elif isinstance(item, Disconnect):
                for conn in self._users.get(item.user):
                    conn.disconnect(item.code)
            elif isinstance(item, Order):
                self.on_order(item)
