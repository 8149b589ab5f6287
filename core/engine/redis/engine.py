"""RedisEngine: every role over one shard transport (DESIGN "Data model").

Channels hash onto P partitions, partitions onto N shards. The roles live in their own modules
and share one transport, the only place that holds a Redis client:

==================  ===================  ==========================================  ==========================
role                module               keys                                        scripts
==================  ===================  ==========================================  ==========================
transport           shards.py            (maps partitions and nodes to shards)       loads and batches them all
Broker              broker.py            hist:{p}:<ch> log:{p} epoch:{p} idem:{p}:*  publish_append history_read
                                         subs:{p}                                    subscription_set
deliveries          inbox.py             inbox:{node}                                —
Presence            presence.py          presence:{p}:<ch> presence-exp:{p}:<ch>     presence_add presence_get
                                         uconn:{p}:<user> nodeidx:{node}             user_acquire user_disconnect
Coordination        coordination.py      members member-status lease:<name>          lease_renew lease_release
                                         cleaned:{node} incarnation
PartitionLog        partitions.py        log:{p} lease:{p} subs:{p} inbox:{node}     lease_renew lease_release
==================  ===================  ==========================================  ==========================

This class wires them together and is the Engine a node, the server API and the control plane
use; a router takes `engine.log` (its PartitionLog) and the engine as its Coordination.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...config import NamespaceOptions
from ...protocol.envelope import ChannelName, Order, Position
from ..base import DeliverFn, Engine, HistoryResult, PresenceEntry, PublishRequest, PublishResult
from .broker import RedisBroker
from .coordination import RedisCoordination
from .inbox import Inboxes
from .partitions import RedisPartitionLog
from .presence import PRESENCE_TTL, RedisPresence
from .shards import Shards

__all__ = ["RedisEngine"]


class RedisEngine(Engine):
    def __init__(
        self,
        urls: Sequence[str],
        *,
        partitions: int = 64,
        options: Callable[[str], NamespaceOptions] = lambda ns: NamespaceOptions(),
        presence_ttl: float = PRESENCE_TTL,
        idempotency_window: float = 300.0,
    ) -> None:
        self.shards = Shards(urls, partitions=partitions)
        self.inboxes = Inboxes(self.shards)
        self.broker = RedisBroker(self.shards, self.inboxes, options=options, idempotency_window=idempotency_window)
        self.presence_manager = RedisPresence(
            self.shards, self.inboxes.local_node, options=options, presence_ttl=presence_ttl
        )
        self.coordination = RedisCoordination(self.shards, self.inboxes, self.broker, self.presence_manager)
        self.log = RedisPartitionLog(self.shards)

    @property
    def partitions(self) -> int:
        return self.shards.partitions

    def partition(self, channel: str) -> int:
        return self.shards.partition(channel)

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self.shards.started:
            return
        await self.shards.start()
        self.presence_manager.start()
        self.coordination.start()

    async def close(self) -> None:
        await self.coordination.close()
        await self.presence_manager.close()
        await self.inboxes.close()
        await self.shards.close()

    async def healthy(self) -> bool:
        return await self.shards.healthy()

    # --- Broker -------------------------------------------------------------------------------
    async def attach(self, node: str, deliver: DeliverFn) -> None:
        await self.broker.attach(node, deliver)

    def detach(self, node: str) -> None:
        self.broker.detach(node)

    def backlog(self, node: str) -> int:
        return self.broker.backlog(node)

    async def publish(
        self,
        channel: ChannelName,
        data: Any,
        *,
        event: str = "message",
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        return await self.broker.publish(channel, data, event=event, sender=sender, idempotency_key=idempotency_key)

    async def publish_batch(self, requests: Sequence[PublishRequest]) -> list[PublishResult | Exception]:
        return await self.broker.publish_batch(requests)

    async def history(
        self, channel: ChannelName, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryResult:
        return await self.broker.history(channel, since=since, limit=limit)

    async def subscribe(self, node: str, channel: ChannelName) -> None:
        await self.broker.subscribe(node, channel)

    async def unsubscribe(self, node: str, channel: ChannelName) -> None:
        await self.broker.unsubscribe(node, channel)

    async def signal(self, channel: ChannelName, frame: dict[str, Any]) -> None:
        await self.broker.signal(channel, frame)

    # --- Presence -----------------------------------------------------------------------------
    async def presence_add(self, channel: ChannelName, entry: PresenceEntry) -> None:
        await self.presence_manager.presence_add(channel, entry)

    async def presence_remove(self, channel: ChannelName, client: str) -> None:
        await self.presence_manager.presence_remove(channel, client)

    async def presence(self, channel: ChannelName) -> list[PresenceEntry]:
        return await self.presence_manager.presence(channel)

    async def user_acquire(self, user: str, client: str, limit: int) -> bool:
        return await self.presence_manager.user_acquire(user, client, limit)

    async def user_release(self, user: str, client: str) -> None:
        await self.presence_manager.user_release(user, client)

    async def disconnect_user(self, user: str, code: int) -> int:
        return await self.presence_manager.disconnect_user(user, code)

    async def flush_index(self) -> None:
        """Write the cleanup-index changes noted so far now (they are written once a second)."""
        await self.presence_manager.flush_index()

    # --- Coordination -------------------------------------------------------------------------
    async def info(self) -> dict[str, Any]:
        return await self.coordination.info()

    async def heartbeat(self, member: str, status: dict[str, Any]) -> bool:
        return await self.coordination.heartbeat(member, status)

    async def members(self) -> dict[str, tuple[float, dict[str, Any]]]:
        return await self.coordination.members()

    async def mark_member(self, member: str, status: dict[str, Any]) -> None:
        await self.coordination.mark_member(member, status)

    async def forget_member(self, member: str) -> None:
        await self.coordination.forget_member(member)

    async def alive(self, role: str, within: float) -> list[str]:
        return await self.coordination.alive(role, within)

    async def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        return await self.coordination.hold_lease(name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self.coordination.release_lease(name, holder)

    async def order(self, node: str, order: Order) -> None:
        await self.coordination.order(node, order)

    async def cleanup_node(self, node: str) -> dict[str, int]:
        return await self.coordination.cleanup_node(node)
