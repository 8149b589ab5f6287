"""The shard transport: the Redis engine's only module that holds a Redis client.

Herald shards its own keys over N independent Redis servers. This module knows how: a partition
maps to a shard by jump hash (core/hashing.py), a node's inbox and indexes to the shard of
`node:<id>`, and cluster-wide keys (members, named leases) live on shard 0. The role modules
(broker, presence, coordination, inbox, partitions) ask for a shard index with `of_partition`,
`of_node` or `GLOBAL` and hand this module what to run there:

* `run` / `script`: one Lua script call. Calls travel in batches per shard: while one batch is
  on its way, new calls queue and leave together when it returns — one pipeline, one round trip,
  each call its own atomic script, in the order they were made. Consecutive publishes share one
  script run (publish_append takes a batch). At low load a batch is one call and nothing waits;
  under load batches grow and round trips per call fall.
* `call` / `execute`: one command, or a pipeline of commands (optionally MULTI/EXEC), named by
  redis-py's command methods (`call(s, "presence", "zrem", key, member)`), so replies are parsed
  exactly as redis-py parses them.
* `blocking`: a command that may block (XREAD, XREADGROUP), on a separate pool per shard.

Every Redis error is translated here into EngineUnavailable (a refused command into its subclass
EngineRefused, whose message carries Redis's reply); nothing above this module sees a redis
exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis import asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ...hashing import jump_hash, partition_of, shard_of_partition, stable_hash
from ...protocol.errors import EngineUnavailable
from ...tasks import TaskSet
from .connection import HiredisPackingConnection
from .scripts import Scripts, load_sources

__all__ = ["Shards", "Call", "cmd", "EngineRefused", "GLOBAL", "REDIS_ERRORS"]

#: Errors that mean "the server could not be reached": the call may be retried elsewhere or later.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
#: The shard of cluster-wide keys (members, member status, named leases).
GLOBAL = 0

#: One command of a pipeline: redis-py's method name, its positional and keyword arguments.
Call = tuple[str, tuple[Any, ...], dict[str, Any]]

_ScriptCall = tuple[str, list[str], list[Any], str, "asyncio.Future[Any]"]  # script, keys, args, what, reply

_BATCHED = frozenset({"publish_append"})  # scripts that take a batch of calls in one run
_BATCH_MAX = 128  # calls per run of such a script
_PIPELINE_MAX = 1024  # calls per round trip
_BUSY, _GATHER = 8, 0.001  # after a batch of at least _BUSY calls, wait _GATHER s before the next


class EngineRefused(EngineUnavailable):
    """Redis answered with an error (a script error, NOGROUP, an ACL refusal): nothing was done."""


def cmd(name: str, *args: Any, **kwargs: Any) -> Call:
    """One command for `Shards.execute`: `cmd("xadd", key, fields, maxlen=1000)`."""
    return name, args, kwargs


def _groups(calls: Sequence[_ScriptCall], todo: Sequence[int]) -> list[list[int]]:
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


class Shards:
    """N Redis servers, each with a bounded client pool, a blocking-read pool and its scripts."""

    def __init__(self, urls: Sequence[str], *, partitions: int = 64) -> None:
        if not urls:
            raise ValueError("RedisEngine needs at least one shard URL")
        self.urls = list(urls)
        self.partitions = partitions
        self._sources = load_sources()
        self._clients: list[aioredis.Redis] = []
        self._blocking: list[aioredis.Redis] = []  # separate clients for blocking reads
        self._scripts: list[Scripts] = []
        self._tasks = TaskSet()
        self._queued: dict[int, list[_ScriptCall]] = {}  # shard -> the script calls of its next batch
        self._busy: set[int] = set()  # shards with a batch on its way

    # --- where keys live ----------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.urls)

    def partition(self, channel: str) -> int:
        return partition_of(channel, self.partitions)

    def of_partition(self, p: int) -> int:
        """The shard holding every key of partition `p` (they share the hash tag `{p}`)."""
        return shard_of_partition(p, len(self.urls))

    def of_channel(self, channel: str) -> int:
        return self.of_partition(self.partition(channel))

    def of_node(self, node: str) -> int:
        """The shard of a node's inbox, cleanup index and tombstone."""
        return jump_hash(stable_hash(f"node:{node}"), len(self.urls))

    # --- lifecycle ----------------------------------------------------------------------------
    def _client(self, url: str, max_connections: int, **kw: Any) -> aioredis.Redis:
        """A client whose pool is bounded: under a connect storm, commands queue for one of
        `max_connections` connections instead of opening one socket each."""
        if url.startswith("redis://"):  # TLS and Unix sockets keep redis-py's own classes
            kw["connection_class"] = HiredisPackingConnection
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=10,
            decode_responses=False,
            socket_connect_timeout=2.0,
            health_check_interval=15,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **kw,
        )
        return aioredis.Redis(connection_pool=pool)

    @property
    def started(self) -> bool:
        return bool(self._clients)

    async def start(self) -> None:
        if self._clients:
            return
        for url in self.urls:
            client = self._client(url, 32, socket_timeout=10.0)
            self._clients.append(client)
            self._blocking.append(self._client(url, 8))
            self._scripts.append(Scripts(client, self._sources))

    async def close(self) -> None:
        await self._tasks.cancel_all()
        for client in (*self._clients, *self._blocking):
            await client.aclose(close_connection_pool=True)
        self._clients, self._blocking, self._scripts = [], [], []

    async def healthy(self) -> bool:
        try:
            await asyncio.gather(*(c.ping() for c in self._clients))
            return True
        except REDIS_ERRORS:
            return False

    # --- commands -----------------------------------------------------------------------------
    async def call(self, s: int, what: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run one command on shard `s`; `what` names the operation in errors."""
        try:
            return await getattr(self._clients[s], name)(*args, **kwargs)
        except REDIS_ERRORS as exc:
            await self._drop_idle_connections()
            raise EngineUnavailable(f"redis unreachable ({what})") from exc
        except RedisError as exc:
            raise EngineRefused(f"redis refused ({what}): {exc}") from exc

    async def execute(self, s: int, what: str, calls: Sequence[Call], *, transaction: bool = False) -> list[Any]:
        """Run `calls` in one pipeline on shard `s` (in one MULTI/EXEC with `transaction`)."""
        pipe = self._clients[s].pipeline(transaction=transaction)
        for name, args, kwargs in calls:
            getattr(pipe, name)(*args, **kwargs)
        try:
            return list(await pipe.execute())
        except REDIS_ERRORS as exc:
            await self._drop_idle_connections()
            raise EngineUnavailable(f"redis unreachable ({what})") from exc
        except RedisError as exc:
            raise EngineRefused(f"redis refused ({what}): {exc}") from exc

    async def blocking(self, s: int, what: str, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run a command that may block (XREAD … BLOCK) on shard `s`'s blocking pool."""
        try:
            return await getattr(self._blocking[s], name)(*args, **kwargs)
        except REDIS_ERRORS as exc:
            raise EngineUnavailable(f"redis unreachable ({what})") from exc
        except RedisError as exc:
            raise EngineRefused(f"redis refused ({what}): {exc}") from exc

    async def hscan_fields(self, s: int, what: str, key: str, match: str, count: int = 1000) -> list[bytes]:
        """Every field of hash `key` on shard `s` that matches the MATCH pattern `match`."""
        try:
            return [f async for f, _ in self._clients[s].hscan_iter(key, match=match, count=count)]
        except REDIS_ERRORS as exc:
            await self._drop_idle_connections()
            raise EngineUnavailable(f"redis unreachable ({what})") from exc
        except RedisError as exc:
            raise EngineRefused(f"redis refused ({what}): {exc}") from exc

    async def _drop_idle_connections(self) -> None:
        """After a shard restart every pooled connection to it is dead: drop the idle ones now so
        the next request reconnects, instead of failing once per pooled connection."""
        for client in self._clients:
            try:
                await client.connection_pool.disconnect(inuse_connections=False)
            except REDIS_ERRORS:
                pass

    # --- script calls, batched per shard ------------------------------------------------------
    def run(self, s: int, script: str, ks: list[str], args: list[Any], what: str) -> asyncio.Future[Any]:
        """Run Lua `script` on shard `s` in its next batch; the future's result is the reply, or
        the EngineUnavailable it stands for (a result, not an exception, so a caller that gave up
        leaves no unretrieved exception behind)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(s, []).append((script, ks, args, what, future))
        if s not in self._busy:
            self._busy.add(s)
            self._tasks.spawn(self._send_queued(s), name=f"engine.batch.{s}")
        return future

    async def script(self, s: int, script: str, ks: list[str], args: list[Any], what: str) -> Any:
        """`run`, awaited: the reply, or EngineUnavailable raised."""
        reply = await self.run(s, script, ks, args, what)
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
                except Exception as exc:
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

    async def _pipeline_scripts(self, s: int, calls: Sequence[_ScriptCall]) -> list[Any]:
        """The replies of `calls`, sent in one pipeline to shard `s`; consecutive publishes go in
        one script run (publish_append takes a batch). EVALSHA goes straight into the pipeline
        (redis-py would first ask SCRIPT EXISTS: a second round trip); a shard that forgot its
        scripts (restarted) gets them loaded and the refused calls again — a refused call did
        nothing, so retrying cannot run it twice."""
        scripts = self._scripts[s]
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            groups = _groups(calls, todo)
            pipe = self._clients[s].pipeline(transaction=False)
            for group in groups:
                ks = [k for i in group for k in calls[i][1]]
                pipe.evalsha(
                    getattr(scripts, calls[group[0]][0]).sha, len(ks), *ks, *(a for i in group for a in calls[i][2])
                )
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
                        replies[i] = EngineRefused(f"redis refused ({calls[i][3]}): {reply}")
                    else:
                        replies[i] = reply
            if not refused:
                break
            for name in {calls[i][0] for i in refused}:
                script_obj = getattr(scripts, name)
                script_obj.sha = await self.call(s, calls[refused[0]][3], "script_load", script_obj.script)
            todo = refused
        return replies
