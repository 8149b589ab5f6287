"""RedisPartitionLog: the partition logs as routers see them (the PartitionLog role).

Each partition has a log stream `log:{p}` read by the consumer group of the routers, a lease
`lease:{p}` naming its router, and a registry snapshot `subs:{p}` of which nodes subscribe to
which channel. A router reads every partition it owns on one shard with one blocking XREADGROUP,
appends what it forwards to node inboxes and acknowledges it (`forward`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..base import LogEntry, LogLost, PartitionLog
from . import keys
from .codec import decoded, pack_batch
from .inbox import INBOX_CAP
from .shards import Call, EngineRefused, Shards, cmd

__all__ = ["RedisPartitionLog"]

_PARTITION_RE = re.compile(rb"\{(\d+)\}")


class RedisPartitionLog(PartitionLog):
    def __init__(self, shards: Shards) -> None:
        self._shards = shards

    @property
    def partitions(self) -> int:
        return self._shards.partitions

    @property
    def shards(self) -> int:
        return self._shards.count

    def shard_of(self, p: int) -> int:
        return self._shards.of_partition(p)

    async def acquire(self, p: int, holder: str, ttl_ms: int) -> bool:
        return bool(
            await self._shards.script(self.shard_of(p), "lease_renew", [keys.lease_key(p)], [holder, ttl_ms], "lease")
        )

    async def release(self, p: int, holder: str) -> None:
        await self._shards.script(self.shard_of(p), "lease_release", [keys.lease_key(p)], [holder], "lease")

    async def ensure_group(self, p: int) -> None:
        try:
            await self._shards.call(
                self.shard_of(p), "group", "xgroup_create", keys.log_key(p), keys.GROUP, id="0", mkstream=True
            )
        except EngineRefused as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def subscriptions(self, p: int) -> dict[bytes, bytes]:
        return dict(await self._shards.call(self.shard_of(p), "snapshot", "hgetall", keys.subs_key(p)))

    async def read(
        self, shard: int, partitions: Sequence[int], consumer: str, count: int, block_ms: int
    ) -> list[tuple[int, list[LogEntry]]]:
        streams = {keys.log_key(p): ">" for p in partitions}
        with _group_lost(shard):
            reply = await self._shards.blocking(
                shard, "read", "xreadgroup", keys.GROUP, consumer, streams, count=count, block=block_ms
            )
        return [(_partition(stream), entries) for stream, entries in reply or ()]

    async def claim(self, p: int, consumer: str, start: str, count: int) -> tuple[str, list[LogEntry]]:
        s = self.shard_of(p)
        with _group_lost(s):
            cursor, entries, *_ = await self._shards.call(
                s,
                "claim",
                "xautoclaim",
                keys.log_key(p),
                keys.GROUP,
                consumer,
                min_idle_time=0,
                start_id=start,
                count=count,
            )
        return decoded(cursor), [e for e in entries if e[1] is not None]

    async def forward(
        self, shard: int, inboxes: dict[str, list[list[Any]]], acks: dict[int, list[bytes]], trims: dict[int, bytes]
    ) -> None:
        appends = [
            (node, cmd("xadd", keys.inbox_key(node), {"b": pack_batch(items)}, maxlen=INBOX_CAP, approximate=True))
            for node, items in inboxes.items()
        ]
        done: list[Call] = [cmd("xack", keys.log_key(p), keys.GROUP, *ids) for p, ids in acks.items()]
        done += [cmd("xtrim", keys.log_key(p), minid=minid, approximate=True) for p, minid in trims.items()]
        if appends and all(self._shards.of_node(node) == shard for node, _ in appends):
            # Every inbox is on this shard: one MULTI/EXEC appends and acknowledges together
            # (one round trip, and never an ack without its append).
            await self._shards.execute(shard, "forward", [c for _, c in appends] + done, transaction=True)
            return
        if appends:
            by_shard: dict[int, list[Call]] = {}
            for node, call in appends:
                by_shard.setdefault(self._shards.of_node(node), []).append(call)
            await asyncio.gather(*(self._shards.execute(s, "forward", calls) for s, calls in by_shard.items()))
        if done:
            await self._shards.execute(shard, "forward", done)

    async def lag(self, p: int, cap: int = 10_000) -> int:
        s = self.shard_of(p)
        for group in await self._shards.call(s, "lag", "xinfo_groups", keys.log_key(p)):
            if group["name"] not in (keys.GROUP, keys.GROUP.encode()):
                continue
            if group.get("lag") is not None:
                return int(group["lag"])
            start = decoded(group["last-delivered-id"])
            return len(await self._shards.call(s, "lag", "xrange", keys.log_key(p), min=f"({start}", count=cap))
        return 0


@contextmanager
def _group_lost(shard: int) -> Iterator[None]:
    """NOGROUP means the shard restarted without its data: raise it as LogLost."""
    try:
        yield
    except EngineRefused as exc:
        if "NOGROUP" in str(exc):
            raise LogLost(f"redis shard {shard} lost its partition logs") from exc
        raise


def _partition(stream: bytes | str) -> int:
    m = _PARTITION_RE.search(stream if isinstance(stream, bytes) else stream.encode())
    return int(m.group(1)) if m else -1
