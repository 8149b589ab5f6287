"""MemoryEngine: the Engine for one process (`herald dev`), with the same semantics as Redis.

Offsets are Redis-stream-like "<ms>-<seq>" pairs, unique and increasing across the whole engine, so
a forgotten channel can still be reasoned about: `_forgotten` is the highest offset any dropped
history ever held, and a resume from below it cannot be proven complete. The epoch is random per
engine instance: a restarted `herald dev` lost its history, and resuming clients are told so.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import NamespaceOptions
from ..protocol.envelope import (
    ZERO_KEY,
    ChannelName,
    Disconnect,
    Epoch,
    Offset,
    Order,
    Position,
    Publication,
    Signal,
    namespace_of,
    personal_channel,
)
from .base import DeliverFn, Engine, HistoryResult, PresenceEntry, PublishRequest, PublishResult, leave_frame

__all__ = ["MemoryEngine"]

IDEMPOTENCY_WINDOW = 300.0
_MAX_IDEMPOTENCY_KEYS = 100_000


@dataclass(slots=True)
class _Channel:
    messages: deque[Publication] = field(default_factory=deque)
    trimmed: tuple[int, int] = ZERO_KEY  # key of the newest message dropped by retention
    top: tuple[int, int] = ZERO_KEY
    top_offset: str = "0-0"
    expires: float = 0.0


class MemoryEngine(Engine):
    """In-process engine. `clock` returns seconds (wall clock); injectable for tests."""

    def __init__(
        self,
        options: Callable[[str], NamespaceOptions] = lambda ns: NamespaceOptions(),
        *,
        clock: Callable[[], float] = time.time,
        idempotency_window: float = IDEMPOTENCY_WINDOW,
    ) -> None:
        self._idempotency_window = idempotency_window
        self._options = options
        self._clock = clock
        self.epoch = Epoch(secrets.token_hex(4))
        self._channels: dict[str, _Channel] = {}
        self._last: tuple[int, int] = ZERO_KEY
        self._forgotten: tuple[int, int] = ZERO_KEY
        self._idempotency: OrderedDict[str, tuple[float, PublishResult]] = OrderedDict()
        self._nodes: dict[str, DeliverFn] = {}
        # channel -> nodes with local subscribers. Tuples: a channel has a few nodes at most, and
        # channels with the same nodes share one tuple (`_node_sets`), so a channel costs its key.
        self._subscribers: dict[str, tuple[str, ...]] = {}
        self._node_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        # channel -> its entries by client; a channel with one entry holds it directly (the common case)
        self._presence: dict[str, PresenceEntry | dict[str, PresenceEntry]] = {}
        self._users: dict[str, tuple[str, ...]] = {}  # user -> its clients (at most the per-user limit)
        self._sweep_at = 0.0
        self._members: dict[str, tuple[float, dict[str, Any]]] = {}
        self._leases: dict[str, tuple[str, float]] = {}

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._nodes.clear()

    async def healthy(self) -> bool:
        return True

    async def attach(self, node: str, deliver: DeliverFn) -> None:
        self._nodes[node] = deliver

    def detach(self, node: str) -> None:
        self._nodes.pop(node, None)
        for channel in [c for c, nodes in self._subscribers.items() if node in nodes]:
            self._unregister(node, channel)
        self._node_sets = {nodes: nodes for nodes in self._node_sets if node not in nodes}

    # publishing ------------------------------------------------------------------------------
    def _next_offset(self, now: float) -> tuple[int, int]:
        ms = int(now * 1000)
        last_ms, seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return self._last

    def _trim(self, ch: _Channel, opts: NamespaceOptions, now: float) -> None:
        msgs = ch.messages
        horizon = int((now - opts.history_ttl) * 1000)
        while msgs and (len(msgs) > opts.history_size or msgs[0].ts < horizon):
            ch.trimmed = msgs.popleft().key

    def _sweep(self, now: float) -> None:
        """Forget channels whose history expired; at most once a second."""
        if now < self._sweep_at:
            return
        self._sweep_at = now + 1.0
        for name in [n for n, ch in self._channels.items() if ch.expires < now]:
            ch = self._channels.pop(name)
            self._forgotten = max(self._forgotten, ch.top)
        while self._idempotency:
            key, (expires, _) = next(iter(self._idempotency.items()))
            if expires >= now and len(self._idempotency) <= _MAX_IDEMPOTENCY_KEYS:
                break
            del self._idempotency[key]

    async def publish(
        self,
        channel: ChannelName,
        data: Any,
        *,
        event: str = "message",
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        now = self._clock()
        self._sweep(now)
        if idempotency_key is not None:
            seen = self._idempotency.get(idempotency_key)
            if seen is not None and seen[0] >= now:
                return seen[1]
        opts = self._options(namespace_of(channel))
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel()
        key = self._next_offset(now)
        offset = Offset(f"{key[0]}-{key[1]}")
        pub = Publication(channel, offset, self.epoch, data, event, sender, int(now * 1000))
        ch.top, ch.top_offset, ch.expires = key, offset, now + opts.history_ttl
        if opts.history_size > 0:
            ch.messages.append(pub)
        else:
            ch.trimmed = key
        self._trim(ch, opts, now)
        result = PublishResult(channel, offset, self.epoch)
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = (now + self._idempotency_window, result)
        self._deliver_to_subscribers(channel, pub)
        return result

    async def publish_batch(self, requests: Sequence[PublishRequest]) -> list[PublishResult | Exception]:
        return [
            await self.publish(r.channel, r.data, event=r.event, sender=r.sender, idempotency_key=r.idempotency_key)
            for r in requests
        ]

    def _deliver_to_subscribers(self, channel: str, item: Publication | Signal) -> None:
        for node in self._subscribers.get(channel, ()):
            deliver = self._nodes.get(node)
            if deliver is not None:
                deliver((item,))

    async def signal(self, channel: ChannelName, frame: dict[str, Any]) -> None:
        self._deliver_to_subscribers(channel, Signal(channel, frame))

    # history ---------------------------------------------------------------------------------
    async def history(
        self, channel: ChannelName, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryResult:
        now = self._clock()
        self._sweep(now)
        ch = self._channels.get(channel)
        if ch is not None:
            self._trim(ch, self._options(namespace_of(channel)), now)
        top, top_offset = (ch.top, ch.top_offset) if ch else (ZERO_KEY, "0-0")
        if since is None:
            msgs = list(ch.messages) if ch else []
            if limit is not None:
                msgs = msgs[-limit:] if limit else []
            return HistoryResult(channel, self.epoch, Offset(top_offset), False, msgs)
        skey = since.key
        floor = ch.trimmed if ch else self._forgotten
        upper = top if ch else self._last
        recovered = since.epoch == self.epoch and floor <= skey <= upper
        msgs = [m for m in ch.messages if m.key > skey] if ch and recovered else []
        if limit is not None and len(msgs) > limit:
            msgs = msgs[:limit]
        return HistoryResult(channel, self.epoch, Offset(top_offset), recovered, msgs)

    # subscriptions ---------------------------------------------------------------------------
    async def subscribe(self, node: str, channel: ChannelName) -> None:
        nodes = self._subscribers.get(channel, ())
        if node not in nodes:
            self._set_nodes(channel, (*nodes, node))

    async def unsubscribe(self, node: str, channel: ChannelName) -> None:
        self._unregister(node, channel)

    def _unregister(self, node: str, channel: str) -> None:
        nodes = self._subscribers.get(channel, ())
        if node in nodes:
            self._set_nodes(channel, tuple(n for n in nodes if n != node))

    def _set_nodes(self, channel: str, nodes: tuple[str, ...]) -> None:
        if nodes:
            self._subscribers[channel] = self._node_sets.setdefault(nodes, nodes)
        else:
            del self._subscribers[channel]

    # presence --------------------------------------------------------------------------------
    async def presence_add(self, channel: ChannelName, entry: PresenceEntry) -> None:
        entries = self._presence.get(channel)
        if isinstance(entries, dict):
            entries[entry.client] = entry
        elif entries is None or entries.client == entry.client:
            self._presence[channel] = entry
        else:
            self._presence[channel] = {entries.client: entries, entry.client: entry}

    async def presence_remove(self, channel: ChannelName, client: str) -> None:
        entries = self._presence.get(channel)
        if isinstance(entries, dict):
            entries.pop(client, None)
            if len(entries) == 1:
                self._presence[channel] = next(iter(entries.values()))
        elif entries is not None and entries.client == client:
            del self._presence[channel]

    async def presence(self, channel: ChannelName) -> list[PresenceEntry]:
        entries = self._presence.get(channel)
        if entries is None:
            return []
        return list(entries.values()) if isinstance(entries, dict) else [entries]

    # per-user connections --------------------------------------------------------------------
    async def user_acquire(self, user: str, client: str, limit: int) -> bool:
        clients = self._users.get(user, ())
        if client not in clients:
            if len(clients) >= limit:
                return False
            self._users[user] = (*clients, client)
        return True

    async def user_release(self, user: str, client: str) -> None:
        clients = self._users.get(user, ())
        if client in clients:
            rest = tuple(c for c in clients if c != client)
            if rest:
                self._users[user] = rest
            else:
                del self._users[user]

    async def disconnect_user(self, user: str, code: int) -> int:
        count = len(self._users.get(user, ()))
        item = Disconnect(user, code)
        for node in list(self._subscribers.get(personal_channel(user), ())):
            deliver = self._nodes.get(node)
            if deliver is not None:
                deliver((item,))
        return count

    async def info(self) -> dict[str, Any]:
        return {"engine": "memory", "nodes": sorted(self._nodes), "routers": [], "partitions": 1}

    # membership and control ------------------------------------------------------------------
    async def heartbeat(self, member: str, status: dict[str, Any]) -> bool:
        self._members[member] = (self._clock(), status)
        return False  # one process: a paused node is a paused engine

    async def members(self) -> dict[str, tuple[float, dict[str, Any]]]:
        return dict(self._members)

    async def mark_member(self, member: str, status: dict[str, Any]) -> None:
        if member in self._members:
            self._members[member] = (self._members[member][0], status)

    async def forget_member(self, member: str) -> None:
        self._members.pop(member, None)

    async def alive(self, role: str, within: float) -> list[str]:
        since, prefix = self._clock() - within, f"{role}:"
        return sorted(
            m[len(prefix) :] for m, (seen, _) in self._members.items() if m.startswith(prefix) and seen >= since
        )

    async def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        now = self._clock()
        current = self._leases.get(name)
        if current is None or current[0] == holder or current[1] < now:
            self._leases[name] = (holder, now + ttl)
            return True
        return False

    async def release_lease(self, name: str, holder: str) -> None:
        if self._leases.get(name, ("", 0.0))[0] == holder:
            del self._leases[name]

    def backlog(self, node: str) -> int:
        return 0

    async def order(self, node: str, order: Order) -> None:
        deliver = self._nodes.get(node)
        if deliver is not None:
            deliver((order,))

    async def cleanup_node(self, node: str) -> dict[str, int]:
        subscriptions = [c for c, nodes in self._subscribers.items() if node in nodes]
        for channel in subscriptions:
            self._unregister(node, channel)
        presence = 0
        for channel in list(self._presence):
            for entry in [e for e in await self.presence(channel) if e.node == node]:  # type: ignore[arg-type]
                presence += 1
                await self.presence_remove(channel, entry.client)  # type: ignore[arg-type]
                if self._options(namespace_of(channel)).join_leave:
                    await self.signal(channel, leave_frame(channel, entry))  # type: ignore[arg-type]
        return {"subscriptions": len(subscriptions), "presence": presence, "connections": 0}
