"""RedisCoordination: membership, leases, orders, and what keeps registrations true (the
Coordination role).

Members (nodes, routers, control replicas) and named leases are cluster-wide: they live on shard
0. Orders go to a node's inbox (inbox.py). Two things here span the other roles, so this role is
given them (the broker's subscriptions, presence's entries):

* the cleanup of a dead node (`cleanup_node`), and the re-registration of a node that was only
  paused and finds its tombstone on its next heartbeat;
* the watch for a shard that restarted without its data (its incarnation marker changed), after
  which everything this process registered there is registered again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import orjson
import structlog

from ...protocol.envelope import Order
from ...protocol.errors import EngineUnavailable
from ...tasks import TaskSet
from ..base import Coordination
from . import keys
from .broker import RedisBroker
from .codec import decoded
from .inbox import Inboxes
from .presence import RedisPresence
from .shards import GLOBAL, Shards, cmd

__all__ = ["RedisCoordination", "ALIVE_TTL_MS"]

log = structlog.get_logger("herald.engine.redis")

ALIVE_TTL_MS = 10_000  # a member without a heartbeat for this long is not listed by info()


class RedisCoordination(Coordination):
    def __init__(self, shards: Shards, inboxes: Inboxes, broker: RedisBroker, presence: RedisPresence) -> None:
        self._shards = shards
        self._inboxes = inboxes
        self._broker = broker
        self._presence = presence
        self._tasks = TaskSet()
        self._incarnations: dict[int, bytes] = {}

    def start(self) -> None:
        self._tasks.spawn(self._incarnation_loop(), name="engine.incarnation")

    async def close(self) -> None:
        await self._tasks.cancel_all()

    async def heartbeat(self, member: str, status: dict[str, Any]) -> bool:
        await self._shards.execute(
            GLOBAL,
            "heartbeat",
            [
                cmd("hset", keys.MEMBER_STATUS_KEY, member, orjson.dumps(status)),
                cmd("zadd", keys.MEMBERS_KEY, {member: int(time.time() * 1000)}),
            ],
        )
        role, _, ident = member.partition(":")
        if role == "node" and ident in self._inboxes.nodes:
            cleaned = await self._shards.call(
                self._shards.of_node(ident), "heartbeat", "getdel", keys.cleaned_key(ident)
            )
            if cleaned is not None:
                log.warning("engine.node.cleaned_while_alive", node=ident)
                await self.reassert()
                return True
        return False

    async def reassert(self, shard: int | None = None) -> None:
        """Register again everything this process registered (on one shard, or everywhere):
        subscriptions first (routers forward nothing to our nodes without them), then presence,
        connection counts and the cleanup index."""
        await self._broker.reassert_subscriptions(shard)
        await self._presence.refresh()

    async def _incarnation_loop(self, period: float = 1.0) -> None:
        """Notice a shard that restarted without its data (its marker changed or vanished) and
        re-register everything this process had there."""
        while True:
            for i in range(self._shards.count):
                try:
                    previous = await self._shards.call(
                        i, "incarnation", "set", keys.INCARNATION_KEY, secrets.token_hex(8), nx=True, get=True
                    )
                    current = (
                        previous
                        if previous is not None
                        else await self._shards.call(i, "incarnation", "get", keys.INCARNATION_KEY)
                    )
                except EngineUnavailable:
                    continue
                known = self._incarnations.get(i)
                if known is None or known == current:
                    self._incarnations[i] = current
                    continue
                log.warning("engine.shard.data_lost", shard=i)
                try:
                    await self.reassert(i)
                except EngineUnavailable as exc:  # keep the old marker: the next round tries again
                    log.warning("engine.shard.reassert_failed", shard=i, error=str(exc))
                    continue
                self._incarnations[i] = current
            await asyncio.sleep(period)

    async def members(self) -> dict[str, tuple[float, dict[str, Any]]]:
        seen, statuses = await self._shards.execute(
            GLOBAL,
            "members",
            [cmd("zrange", keys.MEMBERS_KEY, 0, -1, withscores=True), cmd("hgetall", keys.MEMBER_STATUS_KEY)],
        )
        out: dict[str, tuple[float, dict[str, Any]]] = {}
        for member, score in seen:
            raw = statuses.get(member)
            out[decoded(member)] = (score / 1000.0, orjson.loads(raw) if raw else {})
        return out

    async def _alive(self, within: float, what: str) -> list[str]:
        since = int(time.time() * 1000) - int(within * 1000)
        return [
            decoded(m) for m in await self._shards.call(GLOBAL, what, "zrangebyscore", keys.MEMBERS_KEY, since, "+inf")
        ]

    async def alive(self, role: str, within: float) -> list[str]:
        return _of_role(await self._alive(within, "members"), role)

    async def mark_member(self, member: str, status: dict[str, Any]) -> None:
        await self._shards.call(GLOBAL, "members", "hset", keys.MEMBER_STATUS_KEY, member, orjson.dumps(status))

    async def forget_member(self, member: str) -> None:
        await self._shards.execute(
            GLOBAL,
            "members",
            [cmd("zrem", keys.MEMBERS_KEY, member), cmd("hdel", keys.MEMBER_STATUS_KEY, member)],
            transaction=True,
        )

    async def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        held = await self._shards.script(
            GLOBAL, "lease_renew", [keys.named_lease_key(name)], [holder, int(ttl * 1000)], "lease"
        )
        return bool(held)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._shards.script(GLOBAL, "lease_release", [keys.named_lease_key(name)], [holder], "lease")

    async def order(self, node: str, order: Order) -> None:
        await self._inboxes.order(node, order)

    async def info(self) -> dict[str, Any]:
        names = await self._alive(ALIVE_TTL_MS / 1000, "info")
        return {
            "engine": "redis",
            "shards": self._shards.count,
            "partitions": self._shards.partitions,
            "nodes": _of_role(names, "node"),
            "routers": _of_role(names, "router"),
        }

    async def cleanup_node(self, node: str) -> dict[str, int]:
        """Subscriptions are found by scanning each partition's registry; presence entries and
        connection counts through the node's cleanup index. Its inbox and index go, and a
        tombstone stays for an hour: a node that was only paused re-registers on finding it."""
        subscriptions = await self._broker.drop_node_subscriptions(node, self._shards.partitions)
        presence, connections = await self._presence.drop_node_entries(node, self._broker.signal)
        await self._shards.execute(
            self._shards.of_node(node),
            "cleanup",
            [
                cmd("delete", keys.inbox_key(node), keys.node_index_key(node)),
                cmd("set", keys.cleaned_key(node), b"1", ex=3600),
            ],
            transaction=True,
        )
        return {"subscriptions": subscriptions, "presence": presence, "connections": connections}


def _of_role(names: list[str], role: str) -> list[str]:
    prefix = f"{role}:"
    return sorted(name[len(prefix) :] for name in names if name.startswith(prefix))
