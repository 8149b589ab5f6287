"""The router process's engine-facing work: membership, partition leases, log reading, forwarding.

One loop per shard reads every partition this router owns on that shard with a single blocking
XREADGROUP, applies subscription records to the registry, batches publications per node, appends
the batches to node inboxes with one pipeline per shard, then acknowledges and trims the logs.
At-least-once: nothing is acknowledged before it is in the inboxes; a new owner first claims the
partition's pending entries; nodes drop duplicates by offset.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from herald import __version__
from herald.core.engine.base import Coordination, LogEntry, LogLost, PartitionLog
from herald.core.protocol.errors import EngineUnavailable
from herald.core.tasks import TaskSet

from .ownership import desired_partitions
from .registry import Registry

__all__ = ["Router", "RouterMetrics"]

log = structlog.get_logger("herald.router")
_TRICKLE = 256  # a read with this many entries or more is a backlog: read again at once
_LINGER_MIN = 0.005  # below that, wait at least this long before the next read,
_LINGER_PER_ENTRY = 0.000125  # and 1 ms per 8 entries read, up to `linger`


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        self.partitions = Gauge("herald_router_partitions", "Partitions owned by this router", registry=r)
        self.entries = Counter("herald_router_log_entries", "Log entries processed, by kind", ["kind"], registry=r)
        self.forwarded = Counter("herald_router_forwarded", "Items appended to node inboxes", registry=r)
        self.batches = Counter("herald_router_inbox_batches", "Inbox batches appended", registry=r)
        self.errors = Counter("herald_router_errors", "Read/forward failures (Redis unreachable)", registry=r)
        self.lag = Gauge(
            "herald_router_lag_entries", "Unread entries of an owned partition log", ["partition"], registry=r
        )
        self.acquired = Counter("herald_router_partition_acquisitions", "Partitions acquired", registry=r)
        self.published = Counter(
            "herald_publications", "Publications accepted through this router's API", ["source"], registry=r
        )


@dataclass
class _Shard:
    index: int
    owned: dict[int, Registry] = field(default_factory=dict)
    recover: set[int] = field(default_factory=set)
    next_sync: float = 0.0
    trim_at: dict[int, float] = field(default_factory=dict)


class Router:
    def __init__(
        self,
        logs: PartitionLog,
        coordination: Coordination,
        router_id: str | None = None,
        *,
        lease_seconds: float = 5.0,
        batch: int = 1000,
        block_ms: int = 100,
        linger: float = 0.020,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self.logs = logs
        self.coordination = coordination
        self.id = router_id or f"router-{secrets.token_hex(4)}"
        self.lease_ms = int(lease_seconds * 1000)
        self.batch = batch
        self.block_ms = block_ms
        self.linger = linger
        self.metrics = metrics or RouterMetrics()
        self._tasks = TaskSet()
        self._shards = [_Shard(i) for i in range(logs.shards)]
        self._running = False
        self.lag: dict[int, int] = {}  # owned partition -> unread log entries (refreshed every 2 s)
        self.started = time.time()

    @property
    def member(self) -> str:
        return f"router:{self.id}"

    def owned(self) -> list[int]:
        return sorted(p for shard in self._shards for p in shard.owned)

    async def start(self) -> None:
        self._running = True
        await self._heartbeat()
        self._tasks.spawn(self._heartbeat_loop(), name="router.heartbeat")
        self._tasks.spawn(self._lag_loop(), name="router.lag")
        for shard in self._shards:
            self._tasks.spawn(self._shard_loop(shard), name=f"router.shard{shard.index}")
        log.info("router.started", router=self.id, partitions=self.logs.partitions, shards=len(self._shards))

    async def stop(self) -> None:
        """Leave the cluster: stop reading, release every lease so others take over at once."""
        self._running = False
        await self._tasks.cancel_all()
        try:
            await self.coordination.forget_member(self.member)
            for shard in self._shards:
                for p in list(shard.owned):
                    await self._release(shard, p)
        except EngineUnavailable:
            pass
        log.info("router.stopped", router=self.id)

    # --- membership ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What the control plane sees of this router (GET /admin/cluster, the dashboard)."""
        sample = self.metrics.registry.get_sample_value
        return {
            "role": "router",
            "id": self.id,
            "state": "ready" if self._running else "stopping",
            "version": __version__,
            "started": self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "partitions": self.owned(),
            "lag": sum(self.lag.values()),
            "lag_by_partition": {str(p): n for p, n in self.lag.items() if n},
            "counters": {
                "forwarded": sample("herald_router_forwarded_total") or 0,
                "published": sample("herald_publications_total", {"source": "api"}) or 0,
            },
        }

    async def _heartbeat(self) -> None:
        await self.coordination.heartbeat(self.member, self.status())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.lease_ms / 5000))
            try:
                await self._heartbeat()
            except EngineUnavailable:
                pass

    async def _lag_loop(self, period: float = 2.0) -> None:
        """Unread entries per owned partition (XINFO GROUPS `lag`, or counted when Redis cannot
        tell after a trim), for /metrics and the control plane."""
        while True:
            await asyncio.sleep(period)
            lag: dict[int, int] = {}
            try:
                for shard in self._shards:
                    for p in list(shard.owned):
                        lag[p] = await self.logs.lag(p)
            except EngineUnavailable:
                continue
            for p in set(self.lag) - set(lag):
                self.metrics.lag.remove(str(p))
            for p, n in lag.items():
                self.metrics.lag.labels(str(p)).set(n)
            self.lag = lag

    async def _live_routers(self) -> list[str]:
        return await self.coordination.alive("router", self.lease_ms / 1000)  # heartbeats come every lease/5 at most

    # --- ownership ----------------------------------------------------------------------------
    async def _sync(self, shard: _Shard) -> None:
        plog = self.logs
        mine = {
            p
            for p in desired_partitions(self.id, await self._live_routers(), plog.partitions)
            if plog.shard_of(p) == shard.index
        }
        for p in list(shard.owned):
            if p not in mine:
                await self._release(shard, p)
        for p in sorted(mine):
            if not await plog.acquire(p, self.id, self.lease_ms):
                shard.owned.pop(p, None)
                continue
            if p not in shard.owned:
                await plog.ensure_group(p)
                shard.owned[p] = Registry.from_snapshot(await plog.subscriptions(p))
                shard.recover.add(p)
                self.metrics.acquired.inc()
                log.info("router.partition.acquired", router=self.id, partition=p, shard=shard.index)
        self.metrics.partitions.set(len(self.owned()))

    async def _release(self, shard: _Shard, p: int) -> None:
        shard.owned.pop(p, None)
        shard.recover.discard(p)
        await self.logs.release(p, self.id)
        log.info("router.partition.released", router=self.id, partition=p, shard=shard.index)

    # --- reading ------------------------------------------------------------------------------
    async def _shard_loop(self, shard: _Shard) -> None:
        delay = 0.05
        while self._running:
            try:
                now = time.monotonic()
                if now >= shard.next_sync:
                    await self._sync(shard)
                    shard.next_sync = now + self.lease_ms / 3000
                for p in sorted(shard.recover):
                    await self._claim_pending(shard, p)
                    shard.recover.discard(p)
                if not shard.owned:
                    await asyncio.sleep(min(0.2, self.lease_ms / 5000))
                    continue
                read = await self.logs.read(shard.index, list(shard.owned), self.id, self.batch, self.block_ms)
                if read:
                    await self._forward(shard, read)
                    n = sum(len(entries) for _, entries in read)
                    if n < _TRICKLE:
                        # Not a backlog: let entries gather so each read and append round trip
                        # carries more of them. A quiet log waits 5 ms (a read costs the router
                        # and Redis about as much whether it brings 1 entry or 40); a busy one
                        # waits longer, up to `linger`, so the cost per message falls when the
                        # CPU is what limits the rate (latency is then up to `linger` more).
                        await asyncio.sleep(min(self.linger, max(_LINGER_MIN, n * _LINGER_PER_ENTRY)))
                delay = 0.05
            except LogLost:
                # The shard restarted without its data: the logs and their group are gone.
                log.warning("router.group.missing", router=self.id, shard=shard.index)
                for p in list(shard.owned):
                    await self.logs.ensure_group(p)
                shard.recover.update(shard.owned)
            except EngineUnavailable as exc:
                self.metrics.errors.inc()
                log.warning(
                    "router.redis.unreachable",
                    router=self.id,
                    shard=shard.index,
                    error=type(exc.__cause__ or exc).__name__,
                )
                shard.recover.update(shard.owned)  # read-but-unacked entries are re-processed first
                shard.next_sync = 0.0
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception:  # never let one bad batch end the shard's loop: log, back off, retry
                self.metrics.errors.inc()
                log.exception("router.shard.failed", router=self.id, shard=shard.index)
                shard.recover.update(shard.owned)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _claim_pending(self, shard: _Shard, p: int) -> None:
        """Take over every unacknowledged entry of partition p (a dead owner's, or our own after a
        failure) and process it before reading new entries, so per-partition order holds."""
        cursor = "0-0"
        while True:
            cursor, entries = await self.logs.claim(p, self.id, cursor, self.batch)
            if entries:
                await self._forward(shard, [(p, entries)])
            if cursor == "0-0" or not entries:
                return

    def _trims(self, shard: _Shard, acks: dict[int, list[bytes]]) -> dict[int, bytes]:
        """The logs to trim to what was acknowledged: trimming is housekeeping, once a second."""
        now = time.monotonic()
        trims: dict[int, bytes] = {}
        for p, ids in acks.items():
            if now >= shard.trim_at.get(p, 0.0):
                shard.trim_at[p] = now + 1.0
                trims[p] = ids[-1]
        return trims

    async def _forward(self, shard: _Shard, read: list[tuple[int, list[LogEntry]]]) -> None:
        out: dict[str, list[list[Any]]] = defaultdict(list)
        acks: dict[int, list[bytes]] = {}
        kinds: dict[bytes, int] = defaultdict(int)
        for p, entries in read:
            reg = shard.owned.get(p)
            if reg is None or not entries:
                continue
            for _entry_id, f in entries:
                kind = f[b"k"]
                kinds[kind] += 1
                if kind == b"m":
                    channel = f[b"c"].decode()
                    item = ["m", channel, f[b"o"].decode(), f[b"e"].decode(), f[b"p"]]
                    for node in reg.nodes(channel):
                        out[node].append(item)
                elif kind == b"s":
                    reg.set(f[b"c"].decode(), f[b"n"].decode(), f[b"on"] == b"1")
                elif kind == b"g":
                    channel = f[b"c"].decode()
                    for node in reg.nodes(channel):
                        out[node].append(["g", channel, f[b"f"]])
                elif kind == b"x":
                    user = f[b"u"].decode()
                    for node in reg.nodes(f"user:{user}"):
                        out[node].append(["x", user, int(f[b"code"])])
            acks[p] = [e[0] for e in entries]
        await self.logs.forward(shard.index, out, acks, self._trims(shard, acks))
        if out:
            self.metrics.forwarded.inc(sum(len(v) for v in out.values()))
            self.metrics.batches.inc(len(out))
        for kind, n in kinds.items():
            self.metrics.entries.labels(kind.decode()).inc(n)
