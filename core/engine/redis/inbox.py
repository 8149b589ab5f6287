"""Node inboxes: the stream each node reads its deliveries and orders from.

Routers append batches of deliveries to `inbox:{node}` (router/service.py through
partitions.py); the control plane appends orders. The node that attached reads its inbox with one
blocking XREAD and trims it to what it has read, so the inbox length is its backlog.
"""

from __future__ import annotations

import asyncio

import orjson
import structlog

from ...protocol.envelope import Delivery, Order
from ...protocol.errors import EngineUnavailable
from ...tasks import TaskSet
from ..base import DeliverFn
from . import keys
from .codec import unpack_batch
from .shards import Shards, cmd

__all__ = ["Inboxes", "INBOX_CAP"]

log = structlog.get_logger("herald.engine.redis")

INBOX_CAP = 100_000  # approximate cap of a node inbox, in batches
INBOX_HOUSEKEEPING = 2.0  # seconds between trims of a node's inbox to what it has read


class Inboxes:
    def __init__(self, shards: Shards) -> None:
        self._shards = shards
        self._tasks = TaskSet()
        self.nodes: dict[str, DeliverFn] = {}  # the nodes attached in this process
        self._node_tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._read: dict[str, bytes] = {}  # node -> last inbox entry id read
        self._backlog: dict[str, int] = {}  # node -> inbox entries not yet trimmed (≈ unread)

    async def close(self) -> None:
        await self._tasks.cancel_all()

    def local_node(self) -> str | None:
        """The node this process serves (user connections are counted for it)."""
        return next(iter(self.nodes), None)

    async def attach(self, node: str, deliver: DeliverFn) -> None:
        self.nodes[node] = deliver
        # Start after whatever an earlier process with this node id left behind.
        newest = await self._shards.call(
            self._shards.of_node(node), "attach", "xrevrange", keys.inbox_key(node), count=1
        )
        self._read[node] = newest[0][0] if newest else b"0-0"
        self._node_tasks[node] = [
            self._tasks.spawn(self._read_loop(node, deliver), name=f"engine.inbox.{node}"),
            self._tasks.spawn(self._housekeeping(node), name=f"engine.inbox-trim.{node}"),
        ]

    def detach(self, node: str) -> None:
        self.nodes.pop(node, None)
        for task in self._node_tasks.pop(node, ()):
            task.cancel()

    def backlog(self, node: str) -> int:
        """Entries in `node`'s inbox not yet trimmed: about what it has still to read."""
        return self._backlog.get(node, 0)

    async def order(self, node: str, order: Order) -> None:
        await self._shards.call(
            self._shards.of_node(node),
            "order",
            "xadd",
            keys.inbox_key(node),
            {"o": orjson.dumps({"action": order.action, "args": order.args})},
            maxlen=INBOX_CAP,
            approximate=True,
        )

    async def _read_loop(self, node: str, deliver: DeliverFn) -> None:
        """Read this node's inbox with one blocking XREAD; survive Redis outages, resume from the
        last id read (nothing routed meanwhile is skipped while the inbox cap holds)."""
        shard = self._shards.of_node(node)
        key = keys.inbox_key(node)
        delay = 0.05
        while node in self.nodes:
            try:
                reply = await self._shards.blocking(
                    shard, "inbox", "xread", {key: self._read[node]}, count=500, block=1000
                )
                delay = 0.05
            except EngineUnavailable as exc:
                log.warning("engine.inbox.unreachable", node=node, error=type(exc.__cause__).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            for _stream, entries in reply or ():
                items: list[Delivery] = []
                for entry_id, fields in entries:
                    self._read[node] = entry_id
                    batch = fields.get(b"b")
                    if batch is not None:
                        items.extend(unpack_batch(batch))
                    elif b"o" in fields:
                        order = orjson.loads(fields[b"o"])
                        items.append(Order(str(order["action"]), dict(order.get("args") or {})))
                if items and node in self.nodes:
                    deliver(items)

    async def _housekeeping(self, node: str) -> None:
        """Trim the inbox to what the node has read (a restarted node starts after the newest entry
        anyway), so its length is the backlog the control plane shows."""
        shard = self._shards.of_node(node)
        key = keys.inbox_key(node)
        while node in self.nodes:
            await asyncio.sleep(INBOX_HOUSEKEEPING)
            try:
                _, length = await self._shards.execute(
                    shard, "inbox", [cmd("xtrim", key, minid=self._read[node], approximate=False), cmd("xlen", key)]
                )
                self._backlog[node] = max(0, int(length) - 1)
            except EngineUnavailable:
                pass
