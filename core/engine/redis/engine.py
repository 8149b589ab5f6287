"""RedisEngine: channels hashed onto P partitions, partitions onto N shards (DESIGN "Data model").

A publication is one Lua call on its partition's shard that appends to the channel history and to
the partition log atomically. Routers read the logs and forward to node inboxes; a node reads its
own inbox with one blocking XREAD. Redis errors are translated here, at the boundary, into
EngineUnavailable; nothing above this module sees a redis exception.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import orjson
import structlog
from redis import asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ...config import NamespaceOptions
from ...hashing import jump_hash, partition_of, shard_of_partition, stable_hash
from ...protocol.envelope import (
    ChannelName, Delivery, Epoch, Offset, Order, Position, namespace_of, offset_key, personal_channel,
)
from ...protocol.errors import EngineUnavailable
from ...tasks import TaskSet
from ..base import DeliverFn, Engine, HistoryResult, PresenceEntry, PublishRequest, PublishResult, leave_frame
from . import keys
from .codec import pack_payload, unpack_batch, unpack_publication
from .connection import HiredisPackingConnection
from .scripts import Scripts, load_sources

__all__ = ["RedisEngine", "REDIS_ERRORS"]

log = structlog.get_logger("herald.engine.redis")

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
LOG_CAP = 1_000_000  # approximate cap of a partition log (routers trim far below it)
INBOX_CAP = 100_000  # approximate cap of a node inbox, in batches
PRESENCE_TTL = 60.0  # seconds a presence entry / connection count lives without a refresh
ALIVE_TTL_MS = 10_000  # a member without a heartbeat for this long is not listed by info()
INBOX_HOUSEKEEPING = 2.0  # seconds between trims of a node's inbox to what it has read


_Call = tuple[str, list[str], list[Any], str, "asyncio.Future[Any]"]  # script, keys, args, what, reply


_BATCHED = frozenset({"publish_append"})  # scripts that take a batch of calls in one run
_BATCH_MAX = 128  # calls per run of such a script
_PIPELINE_MAX = 1024  # calls per round trip
_BUSY, _GATHER = 8, 0.001  # after a batch of at least _BUSY calls, wait _GATHER s before the next


def _groups(calls: Sequence[_Call], todo: Sequence[int]) -> list[list[int]]:
    """The indices of `todo`, one list per script run: consecutive calls of a batched script
    together (up to _BATCH_MAX), every other call alone."""
    out: list[list[int]] = []
    for i in todo:
        name = calls[i][0]
        last = out[-1] if out else None
        if last is not None and name in _BATCHED and calls[last[0]][0] == name and len(last) < _BATCH_MAX:
            last.append(i)
        else:
            out.append([i])
    return out


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
        if not urls:
            raise ValueError("RedisEngine needs at least one shard URL")
        self.urls = list(urls)
        self.partitions = partitions
        self._options = options
        self._presence_ttl = presence_ttl
        self._idempotency_ms = int(idempotency_window * 1000)
        self._sources = load_sources()
        self.shards: list[aioredis.Redis] = []
        self.blocking: list[aioredis.Redis] = []  # separate clients for blocking reads
        self.scripts: list[Scripts] = []
        self._tasks = TaskSet()
        self._nodes: dict[str, DeliverFn] = {}
        self._node_tasks: dict[str, list[asyncio.Task[None]]] = {}
        # what this process registered, re-asserted periodically so a crash lets it expire
        self._presence: dict[tuple[str, str], PresenceEntry] = {}
        self._users: dict[tuple[str, str], None] = {}
        self._subscriptions: dict[tuple[str, str], None] = {}  # (node, channel) registered here
        self._incarnations: dict[int, bytes] = {}
        self._inbox_read: dict[str, bytes] = {}  # node -> last inbox entry id read
        self._backlog: dict[str, int] = {}  # node -> inbox entries not yet trimmed (≈ unread)
        self._index_changes: dict[str, dict[bytes, bool]] = {}  # node -> {ref: added?} to write
        self._queued: dict[int, list[_Call]] = {}  # shard -> the script calls of its next batch
        self._busy: set[int] = set()  # shards with a batch on its way
        self._epochs = random.Random()  # candidate epochs (see _new_epoch)

    # --- plumbing -----------------------------------------------------------------------------
    def _client(self, url: str, max_connections: int, **kw: Any) -> aioredis.Redis:
        """A client whose pool is bounded: under a connect storm, commands queue for one of
        `max_connections` connections instead of opening one socket each."""
        if url.startswith("redis://"):  # TLS and Unix sockets keep redis-py's own classes
            kw["connection_class"] = HiredisPackingConnection
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10, decode_responses=False,
            socket_connect_timeout=2.0, health_check_interval=15,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError], **kw)
        return aioredis.Redis(connection_pool=pool)

    async def start(self) -> None:
        if self.shards:
            return
        for url in self.urls:
            client = self._client(url, 32, socket_timeout=10.0)
            self.shards.append(client)
            self.blocking.append(self._client(url, 8))
            self.scripts.append(Scripts(client, self._sources))
        self._tasks.spawn(self._refresh_loop(), name="engine.refresh")
        self._tasks.spawn(self._incarnation_loop(), name="engine.incarnation")
        self._tasks.spawn(self._index_loop(), name="engine.index")

    async def close(self) -> None:
        await self._tasks.cancel_all()
        for client in (*self.shards, *self.blocking):
            await client.aclose(close_connection_pool=True)
        self.shards, self.blocking, self.scripts = [], [], []

    async def healthy(self) -> bool:
        try:
            await asyncio.gather(*(c.ping() for c in self.shards))
            return True
        except REDIS_ERRORS:
            return False

    def partition(self, channel: str) -> int:
        return partition_of(channel, self.partitions)

    def shard_index(self, p: int) -> int:
        return shard_of_partition(p, len(self.urls))

    def node_shard(self, node: str) -> int:
        return jump_hash(stable_hash(f"node:{node}"), len(self.urls))

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except REDIS_ERRORS as exc:
            await self._drop_idle_connections()
            raise EngineUnavailable(f"redis unreachable ({what})") from exc

    async def _drop_idle_connections(self) -> None:
        """After a shard restart every pooled connection to it is dead: drop the idle ones now so
        the next request reconnects, instead of failing once per pooled connection."""
        for client in self.shards:
            try:
                await client.connection_pool.disconnect(inuse_connections=False)
            except REDIS_ERRORS:
                pass

    def _new_epoch(self) -> str:
        """A candidate epoch, used only by a partition that has none (new, or its data lost).
        Unique, not secret: a private PRNG seeded from the OS is enough, and cheap (and no
        `random.seed()` elsewhere in the process can make it repeat)."""
        return f"{self._epochs.getrandbits(32):08x}"

    # --- script calls, batched per shard ------------------------------------------------------
    def _run(self, s: int, script: str, ks: list[str], args: list[Any], what: str) -> asyncio.Future[Any]:
        """Run Lua `script` on shard `s`; the future's result is the reply, or the EngineUnavailable
        it stands for (a result, not an exception, so a caller that gave up leaves no unretrieved
        exception behind). Calls travel in batches per shard: while one batch is on its way, new
        calls (publishes, a reconnect storm's subscriptions and presence) queue and leave together
        when it returns — one pipeline, one round trip, each call its own atomic script, in the
        order they were made. At low load a batch is one call and nothing waits; under load
        batches grow and round trips per call fall."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(s, []).append((script, ks, args, what, future))
        if s not in self._busy:
            self._busy.add(s)
            self._tasks.spawn(self._send_queued(s), name=f"engine.batch.{s}")
        return future

    async def _script(self, s: int, script: str, ks: list[str], args: list[Any], what: str) -> Any:
        reply = await self._run(s, script, ks, args, what)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def _send_queued(self, s: int) -> None:
        try:
            while queued := self._queued.get(s):
                # at most _PIPELINE_MAX calls a round trip, so a storm's pipeline cannot hold the
                # shard (and everyone else's calls) for long; the rest go in the next
                batch, self._queued[s] = queued[:_PIPELINE_MAX], queued[_PIPELINE_MAX:]
                try:
                    replies = await self._pipeline_scripts(s, batch)
                except Exception as exc:  # noqa: BLE001 - every waiting caller must hear about it
                    replies = [EngineUnavailable(f"redis failed ({what}): {exc!r}") for *_, what, _ in batch]
                for (*_, future), reply in zip(batch, replies, strict=True):
                    if not future.done():
                        future.set_result(reply)
                if len(batch) >= _BUSY and len(self._queued.get(s, ())) < len(batch):
                    # Busy: let the next batch fill for a moment. Each round trip costs this
                    # process and Redis about as much for 10 calls as for 40, so under load
                    # this cuts the CPU per call; each call waits at most _GATHER more.
                    await asyncio.sleep(_GATHER)
        finally:
            self._busy.discard(s)

    async def _pipeline_scripts(self, s: int, calls: Sequence[_Call]) -> list[Any]:
        """The replies of `calls`, sent in one pipeline to shard `s`; consecutive publishes go in
        one script run (publish_append takes a batch). EVALSHA goes straight into the pipeline
        (redis-py would first ask SCRIPT EXISTS: a second round trip); a shard that forgot its
        scripts (restarted) gets them loaded and the refused calls again — a refused call did
        nothing, so retrying cannot run it twice."""
        scripts = self.scripts[s]
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            groups = _groups(calls, todo)
            pipe = self.shards[s].pipeline(transaction=False)
            for group in groups:
                ks = [k for i in group for k in calls[i][1]]
                pipe.evalsha(getattr(scripts, calls[group[0]][0]).sha, len(ks), *ks,
                             *(a for i in group for a in calls[i][2]))
            try:
                answers = await pipe.execute(raise_on_error=False)
            except REDIS_ERRORS:
                await self._drop_idle_connections()
                for i in todo:
                    replies[i] = EngineUnavailable(f"redis unreachable ({calls[i][3]})")
                return replies
            refused = []
            for group, answer in zip(groups, answers, strict=True):
                each = answer if calls[group[0]][0] in _BATCHED and isinstance(answer, list) else [answer] * len(group)
                for i, reply in zip(group, each, strict=True):
                    if isinstance(reply, NoScriptError) and not attempt:
                        refused.append(i)
                    elif isinstance(reply, Exception):
                        replies[i] = EngineUnavailable(f"redis refused ({calls[i][3]}): {reply}")
                    else:
                        replies[i] = reply
            if not refused:
                break
            for name in {calls[i][0] for i in refused}:
                script_obj = getattr(scripts, name)
                script_obj.sha = await self._call(calls[refused[0]][3], self.shards[s].script_load(script_obj.script))
            todo = refused
        return replies

    # --- publishing ---------------------------------------------------------------------------
    def _publish_call(self, r: PublishRequest) -> tuple[int, list[str], list[Any]]:
        """(shard, keys, args) of the publish_append script for one message."""
        p = self.partition(r.channel)
        opts = self._options(namespace_of(r.channel))
        ks = [keys.hist_key(p, r.channel), keys.log_key(p), keys.epoch_key(p), keys.idem_key(p, r.idempotency_key or "-")]
        args = [r.channel, pack_payload(r.event, r.sender, r.data), opts.history_size, int(opts.history_ttl * 1000),
                self._new_epoch(), "1" if r.idempotency_key else "0", self._idempotency_ms, LOG_CAP]
        return self.shard_index(p), ks, args

    async def publish(self, channel: ChannelName, data: Any, *, event: str = "message", sender: str | None = None,
                      idempotency_key: str | None = None) -> PublishResult:
        request = PublishRequest(channel, data, event, sender, idempotency_key)
        s, ks, args = self._publish_call(request)
        return _publish_result(request, await self._run(s, "publish_append", ks, args, "publish"))

    async def publish_batch(self, requests: Sequence[PublishRequest]) -> list[PublishResult | Exception]:
        """Every message its own atomic script, all of them in the shards' next batches."""
        futures = [self._run(s, "publish_append", ks, args, "publish")
                   for s, ks, args in map(self._publish_call, requests)]
        out: list[PublishResult | Exception] = []
        for r, reply in zip(requests, await asyncio.gather(*futures), strict=True):
            try:
                out.append(_publish_result(r, reply))
            except EngineUnavailable as exc:
                out.append(exc)
        return out

    async def signal(self, channel: ChannelName, frame: dict[str, Any]) -> None:
        p = self.partition(channel)
        client = self.shards[self.shard_index(p)]
        await self._call("signal", client.xadd(keys.log_key(p), {"k": "g", "c": channel,
                                                                  "f": msgpack.packb(frame)},
                                                maxlen=LOG_CAP, approximate=True))

    # --- history ------------------------------------------------------------------------------
    async def history(self, channel: ChannelName, *, since: Position | None = None,
                      limit: int | None = None) -> HistoryResult:
        p = self.partition(channel)
        s = self.shard_index(p)
        opts = self._options(namespace_of(channel))
        count = -1 if limit is None else limit
        if count == 0 and since is None:
            count = 0
        res = await self._script(s, "history_read", [keys.hist_key(p, channel), keys.epoch_key(p)],
                                 [self._new_epoch(), int(opts.history_ttl * 1000), since.offset if since else "", count],
                                 "history")
        epoch, last, dropped = Epoch(_s(res[0])), _s(res[1]), _s(res[2])
        entries = res[3]
        if since is None:
            if limit is not None:
                entries = list(reversed(entries))[-limit:] if limit else []
            messages = [self._entry(channel, epoch, e) for e in entries]
            return HistoryResult(channel, epoch, Offset(last), False, messages)
        skey = since.key
        recovered = since.epoch == epoch and offset_key(dropped) <= skey <= offset_key(last)
        messages = [self._entry(channel, epoch, e) for e in entries] if recovered else []
        return HistoryResult(channel, epoch, Offset(last), recovered, messages)

    @staticmethod
    def _entry(channel: str, epoch: str, entry: Any) -> Any:
        offset, fields = entry
        values = dict(zip(fields[::2], fields[1::2], strict=True)) if isinstance(fields, list) else fields
        return unpack_publication(channel, _s(offset), epoch, values[b"p"])

    # --- subscriptions ------------------------------------------------------------------------
    async def _set_subscription(self, node: str, channel: ChannelName, on: bool) -> None:
        if on:
            self._subscriptions[(node, channel)] = None
        else:
            self._subscriptions.pop((node, channel), None)
        p = self.partition(channel)
        s = self.shard_index(p)
        await self._script(s, "subscription_set", [keys.subs_key(p), keys.log_key(p)],
                           [channel, node, "1" if on else "0", LOG_CAP], "subscribe")

    async def subscribe(self, node: str, channel: ChannelName) -> None:
        await self._set_subscription(node, channel, True)

    async def unsubscribe(self, node: str, channel: ChannelName) -> None:
        await self._set_subscription(node, channel, False)

    # --- deliveries to this process's node ----------------------------------------------------
    async def attach(self, node: str, deliver: DeliverFn) -> None:
        self._nodes[node] = deliver
        client = self.shards[self.node_shard(node)]
        # Start after whatever an earlier process with this node id left behind.
        newest = await self._call("attach", client.xrevrange(keys.inbox_key(node), count=1))
        self._inbox_read[node] = newest[0][0] if newest else b"0-0"
        self._node_tasks[node] = [
            self._tasks.spawn(self._inbox_loop(node, deliver), name=f"engine.inbox.{node}"),
            self._tasks.spawn(self._inbox_housekeeping(node), name=f"engine.inbox-trim.{node}"),
        ]

    def detach(self, node: str) -> None:
        self._nodes.pop(node, None)
        for task in self._node_tasks.pop(node, ()):
            task.cancel()

    def backlog(self, node: str) -> int:
        """Entries in `node`'s inbox not yet trimmed: about what it has still to read."""
        return self._backlog.get(node, 0)

    async def _inbox_loop(self, node: str, deliver: DeliverFn) -> None:
        """Read this node's inbox with one blocking XREAD; survive Redis outages, resume from the
        last id read (nothing routed meanwhile is skipped while the inbox cap holds)."""
        shard = self.node_shard(node)
        key = keys.inbox_key(node)
        delay = 0.05
        while node in self._nodes:
            client = self.blocking[shard]
            try:
                reply = await client.xread({key: self._inbox_read[node]}, count=500, block=1000)
                delay = 0.05
            except REDIS_ERRORS as exc:
                log.warning("engine.inbox.unreachable", node=node, error=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            for _stream, entries in reply or ():
                items: list[Delivery] = []
                for entry_id, fields in entries:
                    self._inbox_read[node] = entry_id
                    batch = fields.get(b"b")
                    if batch is not None:
                        items.extend(unpack_batch(batch))
                    elif b"o" in fields:
                        order = orjson.loads(fields[b"o"])
                        items.append(Order(str(order["action"]), dict(order.get("args") or {})))
                if items and node in self._nodes:
                    deliver(items)

    async def _inbox_housekeeping(self, node: str) -> None:
        """Trim the inbox to what the node has read (a restarted node starts after the newest entry
        anyway), so its length is the backlog the control plane shows."""
        client = self.shards[self.node_shard(node)]
        key = keys.inbox_key(node)
        while node in self._nodes:
            await asyncio.sleep(INBOX_HOUSEKEEPING)
            try:
                pipe = client.pipeline(transaction=False)
                pipe.xtrim(key, minid=self._inbox_read[node], approximate=False)
                pipe.xlen(key)
                _, length = await pipe.execute()
                self._backlog[node] = max(0, int(length) - 1)
            except REDIS_ERRORS:
                pass

    # --- presence -----------------------------------------------------------------------------
    def _presence_keys(self, channel: str) -> tuple[int, list[str]]:
        p = self.partition(channel)
        return self.shard_index(p), [keys.presence_key(p, channel), keys.presence_exp_key(p, channel)]

    def _presence_call(self, channel: str, entry: PresenceEntry, now_ms: int) -> tuple[int, str, list[str], list[Any]]:
        """(shard, script, keys, args) that add or refresh one presence entry."""
        s, ks = self._presence_keys(channel)
        ttl = int(self._presence_ttl * 1000)
        packed = msgpack.packb([entry.client, entry.user, entry.node, entry.status, entry.info])
        return s, "presence_add", ks, [entry.client, packed, now_ms + ttl, ttl * 2]

    async def _presence_write(self, channel: str, entry: PresenceEntry) -> None:
        await self._script(*self._presence_call(channel, entry, int(time.time() * 1000)), "presence")

    async def presence_add(self, channel: ChannelName, entry: PresenceEntry) -> None:
        self._presence[(channel, entry.client)] = entry
        self._index(entry.node, _presence_ref(channel, entry), add=True)
        await self._presence_write(channel, entry)

    async def presence_remove(self, channel: ChannelName, client: str) -> None:
        entry = self._presence.pop((channel, client), None)
        s, ks = self._presence_keys(channel)
        pipe = self.shards[s].pipeline(transaction=True)
        pipe.hdel(ks[0], client)
        pipe.zrem(ks[1], client)
        if entry is not None:
            self._index(entry.node, _presence_ref(channel, entry), add=False)
        await self._call("presence", pipe.execute())

    def _index(self, node: str | None, ref: bytes, *, add: bool) -> None:
        """Note one change of `node`'s cleanup index (see keys.node_index_key); changes are written
        once a second in one pipeline, off the connect path. An entry added just before a crash
        may miss the index: it then expires with its TTL instead of being removed at once."""
        if node is None:
            return
        changes = self._index_changes.setdefault(node, {})
        changes[ref] = add

    async def _index_loop(self, period: float = 1.0) -> None:
        while True:
            await asyncio.sleep(period)
            await self.flush_index()

    async def flush_index(self) -> None:
        """Write the noted cleanup-index changes now (the index loop does it once a second)."""
        pending, self._index_changes = self._index_changes, {}
        for node, changes in pending.items():
            key = keys.node_index_key(node)
            pipe = self.shards[self.node_shard(node)].pipeline(transaction=False)
            added = [ref for ref, add in changes.items() if add]
            removed = [ref for ref, add in changes.items() if not add]
            for start in range(0, len(added), 1000):
                pipe.sadd(key, *added[start:start + 1000])
            for start in range(0, len(removed), 1000):
                pipe.srem(key, *removed[start:start + 1000])
            pipe.pexpire(key, int(self._presence_ttl * 2000))
            try:
                await pipe.execute()
            except REDIS_ERRORS:  # put them back (newer changes win) and try again next time
                for ref, add in changes.items():
                    self._index_changes.setdefault(node, {}).setdefault(ref, add)

    def _local_node(self) -> str | None:
        """The node this process serves (user connections are counted for it)."""
        return next(iter(self._nodes), None)

    async def presence(self, channel: ChannelName) -> list[PresenceEntry]:
        s, ks = self._presence_keys(channel)
        raw = await self._script(s, "presence_get", ks, [int(time.time() * 1000)], "presence")
        return [PresenceEntry(*msgpack.unpackb(v, raw=False)) for v in raw]

    # --- per-user connections -----------------------------------------------------------------
    def _user_key(self, user: str) -> tuple[int, int, str]:
        p = self.partition(personal_channel(user))
        return p, self.shard_index(p), keys.users_key(p, user)

    def _user_call(self, user: str, client: str, limit: int, now_ms: int) -> tuple[int, str, list[str], list[Any]]:
        """(shard, script, keys, args) that count (or keep counting) one connection of `user`."""
        _, s, key = self._user_key(user)
        return s, "user_acquire", [key], [client, limit, now_ms, now_ms + int(self._presence_ttl * 1000)]

    async def user_acquire(self, user: str, client: str, limit: int) -> bool:
        ok = bool(await self._script(*self._user_call(user, client, limit, int(time.time() * 1000)), "users"))
        if ok:
            self._users[(user, client)] = None
            self._index(self._local_node(), _user_ref(user, client), add=True)
        return ok

    async def user_release(self, user: str, client: str) -> None:
        self._users.pop((user, client), None)
        _, s, key = self._user_key(user)
        self._index(self._local_node(), _user_ref(user, client), add=False)
        await self._call("users", self.shards[s].zrem(key, client))

    async def disconnect_user(self, user: str, code: int) -> int:
        p, s, key = self._user_key(user)
        n = await self._script(s, "user_disconnect", [key, keys.log_key(p)],
                               [user, code, int(time.time() * 1000), LOG_CAP], "disconnect")
        return int(n)

    async def _refresh_loop(self) -> None:
        """Re-assert this process's presence entries and connection counts (they expire after
        PRESENCE_TTL without it, which is how a crashed node's entries disappear), in pipelined
        batches per shard."""
        while True:
            await asyncio.sleep(self._presence_ttl / 3)
            try:
                await self._refresh()
            except EngineUnavailable:
                log.warning("engine.refresh.failed")

    async def _incarnation_loop(self, period: float = 1.0) -> None:
        """Notice a shard that restarted without its data (its marker changed or vanished) and
        re-register everything this process had there: subscriptions at once (routers would
        otherwise forward nothing to our nodes), then presence and connection counts."""
        while True:
            for i, client in enumerate(self.shards):
                try:
                    previous = await client.set(keys.INCARNATION_KEY, secrets.token_hex(8), nx=True, get=True)
                    current = previous if previous is not None else await client.get(keys.INCARNATION_KEY)
                except REDIS_ERRORS:
                    continue
                known = self._incarnations.get(i)
                if known is None or known == current:
                    self._incarnations[i] = current
                    continue
                log.warning("engine.shard.data_lost", shard=i)
                try:
                    await self._reassert(i)
                except EngineUnavailable as exc:  # keep the old marker: the next round tries again
                    log.warning("engine.shard.reassert_failed", shard=i, error=str(exc))
                    continue
                self._incarnations[i] = current
            await asyncio.sleep(period)

    async def _reassert(self, shard: int | None = None) -> None:
        """Register again everything this process registered (on one shard, or everywhere):
        subscriptions first (routers forward nothing to our nodes without them), then presence,
        connection counts and the cleanup index."""
        for node, channel in list(self._subscriptions):
            if shard is None or self.shard_index(self.partition(channel)) == shard:
                await self._set_subscription(node, channel, True)  # type: ignore[arg-type]
        await self._refresh()

    async def _refresh(self, batch: int = 500) -> None:
        now = int(time.time() * 1000)
        calls = [self._presence_call(channel, e, now) for (channel, _), e in list(self._presence.items())]
        calls += [self._user_call(user, client, 1 << 30, now) for user, client in list(self._users)]
        await self._refresh_index()
        for start in range(0, len(calls), batch):
            pipes: dict[int, Any] = {}
            for s, script, ks, args in calls[start:start + batch]:
                pipe = pipes.get(s)
                if pipe is None:
                    pipe = pipes[s] = self.shards[s].pipeline(transaction=False)
                await getattr(self.scripts[s], script)(keys=ks, args=args, client=pipe)  # buffers the call in the pipeline
            await self._call("refresh", asyncio.gather(*(p.execute() for p in pipes.values())))

    async def _refresh_index(self) -> None:
        """Re-add every cleanup-index entry of this process and keep the index keys alive."""
        refs: dict[str, list[bytes]] = {}
        for (channel, _), entry in list(self._presence.items()):
            refs.setdefault(entry.node, []).append(_presence_ref(channel, entry))
        local = self._local_node()
        if local is not None:
            refs.setdefault(local, []).extend(_user_ref(user, client) for user, client in list(self._users))
        for node, members in refs.items():
            key = keys.node_index_key(node)
            pipe = self.shards[self.node_shard(node)].pipeline(transaction=False)
            for start in range(0, len(members), 1000):
                pipe.sadd(key, *members[start:start + 1000])
            pipe.pexpire(key, int(self._presence_ttl * 2000))
            await self._call("refresh", pipe.execute())

    # --- membership and control ---------------------------------------------------------------
    async def heartbeat(self, member: str, status: dict[str, Any]) -> bool:
        pipe = self.shards[0].pipeline(transaction=False)
        pipe.hset(keys.MEMBER_STATUS_KEY, member, orjson.dumps(status))
        pipe.zadd(keys.MEMBERS_KEY, {member: int(time.time() * 1000)})
        await self._call("heartbeat", pipe.execute())
        role, _, ident = member.partition(":")
        if role == "node" and ident in self._nodes:
            cleaned = await self._call("heartbeat", self.shards[self.node_shard(ident)].getdel(keys.cleaned_key(ident)))
            if cleaned is not None:
                log.warning("engine.node.cleaned_while_alive", node=ident)
                await self._reassert()
                return True
        return False

    async def members(self) -> dict[str, tuple[float, dict[str, Any]]]:
        pipe = self.shards[0].pipeline(transaction=False)
        pipe.zrange(keys.MEMBERS_KEY, 0, -1, withscores=True)
        pipe.hgetall(keys.MEMBER_STATUS_KEY)
        seen, statuses = await self._call("members", pipe.execute())
        out: dict[str, tuple[float, dict[str, Any]]] = {}
        for member, score in seen:
            raw = statuses.get(member)
            out[_s(member)] = (score / 1000.0, orjson.loads(raw) if raw else {})
        return out

    async def mark_member(self, member: str, status: dict[str, Any]) -> None:
        await self._call("members", self.shards[0].hset(keys.MEMBER_STATUS_KEY, member, orjson.dumps(status)))

    async def forget_member(self, member: str) -> None:
        pipe = self.shards[0].pipeline(transaction=True)
        pipe.zrem(keys.MEMBERS_KEY, member)
        pipe.hdel(keys.MEMBER_STATUS_KEY, member)
        await self._call("members", pipe.execute())

    async def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        held = await self._call("lease", self.scripts[0].lease_renew(
            keys=[keys.named_lease_key(name)], args=[holder, int(ttl * 1000)]))
        return bool(held)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call("lease", self.scripts[0].lease_release(keys=[keys.named_lease_key(name)], args=[holder]))

    async def order(self, node: str, order: Order) -> None:
        client = self.shards[self.node_shard(node)]
        await self._call("order", client.xadd(keys.inbox_key(node),
                                              {"o": orjson.dumps({"action": order.action, "args": order.args})},
                                              maxlen=INBOX_CAP, approximate=True))

    async def cleanup_node(self, node: str) -> dict[str, int]:
        """Subscriptions are found by scanning each partition's registry (bounded by the number of
        partitions); presence and connection counts through the node's cleanup index."""
        return await self._call("cleanup", self._cleanup_node(node))  # type: ignore[no-any-return]

    async def _cleanup_node(self, node: str) -> dict[str, int]:
        removed = {"subscriptions": 0, "presence": 0, "connections": 0}
        pattern = "*\n" + _glob_escape(node)
        for p in range(self.partitions):
            s = self.shard_index(p)
            channels = [_s(f).partition("\n")[0]
                        async for f, _ in self.shards[s].hscan_iter(keys.subs_key(p), match=pattern, count=1000)]
            for channel in channels:
                await self._call("cleanup", self.scripts[s].subscription_set(
                    keys=[keys.subs_key(p), keys.log_key(p)], args=[channel, node, "0", LOG_CAP]))
            removed["subscriptions"] += len(channels)
        home = self.shards[self.node_shard(node)]
        refs = await self._call("cleanup", home.smembers(keys.node_index_key(node)))
        for ref in refs:
            kind, *rest = msgpack.unpackb(ref, raw=False)
            if kind == "p":
                channel, client, user = rest
                s, ks = self._presence_keys(channel)
                pipe = self.shards[s].pipeline(transaction=True)
                pipe.hdel(ks[0], client)
                pipe.zrem(ks[1], client)
                await self._call("cleanup", pipe.execute())
                if self._options(namespace_of(channel)).join_leave:
                    await self.signal(channel, leave_frame(channel, PresenceEntry(client, user, node)))
                removed["presence"] += 1
            elif kind == "u":
                user, client = rest
                _, s, key = self._user_key(user)
                await self._call("cleanup", self.shards[s].zrem(key, client))
                removed["connections"] += 1
        pipe = home.pipeline(transaction=True)
        pipe.delete(keys.inbox_key(node), keys.node_index_key(node))
        pipe.set(keys.cleaned_key(node), b"1", ex=3600)
        await self._call("cleanup", pipe.execute())
        return removed

    async def info(self) -> dict[str, Any]:
        now = int(time.time() * 1000)
        try:
            members = await self.shards[0].zrangebyscore(keys.MEMBERS_KEY, now - ALIVE_TTL_MS, "+inf")
        except REDIS_ERRORS as exc:
            raise EngineUnavailable("redis unreachable (info)") from exc
        names = [_s(m) for m in members]
        return {"engine": "redis", "shards": len(self.urls), "partitions": self.partitions,
                "nodes": sorted(n[5:] for n in names if n.startswith("node:")),
                "routers": sorted(n[7:] for n in names if n.startswith("router:"))}


def _publish_result(request: PublishRequest, reply: Any) -> PublishResult:
    """The publish script's reply [offset, epoch], or the EngineUnavailable it stands for."""
    if isinstance(reply, Exception):
        raise reply
    return PublishResult(request.channel, Offset(_s(reply[0])), Epoch(_s(reply[1])))


def _presence_ref(channel: str, entry: PresenceEntry) -> bytes:
    return msgpack.packb(["p", channel, entry.client, entry.user])


def _user_ref(user: str, client: str) -> bytes:
    return msgpack.packb(["u", user, client])


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
