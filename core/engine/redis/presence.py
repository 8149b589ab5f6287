"""RedisPresence: presence entries and per-user connection counts (the Presence role).

Entries and counts live in the partition of their channel (of the user's personal channel for
counts), with a TTL: this process re-asserts what it registered every third of it (the refresh
loop), which is how a crashed node's entries disappear. Each node also keeps a cleanup index
(`nodeidx:{node}`) of what it registered, so the control plane removes a dead node's entries at
once instead of waiting for the TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack
import structlog

from ...config import NamespaceOptions
from ...protocol.envelope import ChannelName, namespace_of, personal_channel
from ...protocol.errors import EngineUnavailable
from ...tasks import TaskSet
from ..base import Presence, PresenceEntry, leave_frame
from . import keys
from .shards import Call, Shards, cmd

__all__ = ["RedisPresence", "PRESENCE_TTL"]

log = structlog.get_logger("herald.engine.redis")

PRESENCE_TTL = 60.0  # seconds a presence entry / connection count lives without a refresh
_Script = tuple[int, str, list[str], list[Any]]  # shard, script, keys, args
SignalFn = Callable[[ChannelName, dict[str, Any]], Awaitable[None]]


class RedisPresence(Presence):
    """`local_node` names the node this process serves (its user connections are indexed for it)."""

    def __init__(
        self,
        shards: Shards,
        local_node: Callable[[], str | None],
        *,
        options: Callable[[str], NamespaceOptions] = lambda ns: NamespaceOptions(),
        presence_ttl: float = PRESENCE_TTL,
    ) -> None:
        self._shards = shards
        self._local_node = local_node
        self._options = options
        self._ttl = presence_ttl
        self._tasks = TaskSet()
        # what this process registered, re-asserted periodically so a crash lets it expire
        self._presence: dict[tuple[str, str], PresenceEntry] = {}
        self._users: dict[tuple[str, str], None] = {}
        self._index_changes: dict[str, dict[bytes, bool]] = {}  # node -> {ref: added?} to write

    def start(self) -> None:
        self._tasks.spawn(self._refresh_loop(), name="engine.refresh")
        self._tasks.spawn(self._index_loop(), name="engine.index")

    async def close(self) -> None:
        await self._tasks.cancel_all()

    # --- presence -----------------------------------------------------------------------------
    def _presence_keys(self, channel: str) -> tuple[int, list[str]]:
        p = self._shards.partition(channel)
        return self._shards.of_partition(p), [keys.presence_key(p, channel), keys.presence_exp_key(p, channel)]

    def _presence_call(self, channel: str, entry: PresenceEntry, now_ms: int) -> _Script:
        """(shard, script, keys, args) that add or refresh one presence entry."""
        s, ks = self._presence_keys(channel)
        ttl = int(self._ttl * 1000)
        packed = msgpack.packb([entry.client, entry.user, entry.node, entry.status, entry.info])
        return s, "presence_add", ks, [entry.client, packed, now_ms + ttl, ttl * 2]

    async def presence_add(self, channel: ChannelName, entry: PresenceEntry) -> None:
        self._presence[(channel, entry.client)] = entry
        self._index(entry.node, _presence_ref(channel, entry), add=True)
        await self._shards.script(*self._presence_call(channel, entry, int(time.time() * 1000)), "presence")

    async def _remove_entry(self, channel: str, client: str, what: str) -> None:
        s, ks = self._presence_keys(channel)
        await self._shards.execute(s, what, [cmd("hdel", ks[0], client), cmd("zrem", ks[1], client)], transaction=True)

    async def presence_remove(self, channel: ChannelName, client: str) -> None:
        entry = self._presence.pop((channel, client), None)
        if entry is not None:
            self._index(entry.node, _presence_ref(channel, entry), add=False)
        await self._remove_entry(channel, client, "presence")

    async def presence(self, channel: ChannelName) -> list[PresenceEntry]:
        s, ks = self._presence_keys(channel)
        raw = await self._shards.script(s, "presence_get", ks, [int(time.time() * 1000)], "presence")
        return [PresenceEntry(*msgpack.unpackb(v, raw=False)) for v in raw]

    # --- per-user connections -----------------------------------------------------------------
    def _user_key(self, user: str) -> tuple[int, int, str]:
        p = self._shards.partition(personal_channel(user))
        return p, self._shards.of_partition(p), keys.users_key(p, user)

    def _user_call(self, user: str, client: str, limit: int, now_ms: int) -> _Script:
        """(shard, script, keys, args) that count (or keep counting) one connection of `user`."""
        _, s, key = self._user_key(user)
        return s, "user_acquire", [key], [client, limit, now_ms, now_ms + int(self._ttl * 1000)]

    async def user_acquire(self, user: str, client: str, limit: int) -> bool:
        ok = bool(await self._shards.script(*self._user_call(user, client, limit, int(time.time() * 1000)), "users"))
        if ok:
            self._users[(user, client)] = None
            self._index(self._local_node(), _user_ref(user, client), add=True)
        return ok

    async def user_release(self, user: str, client: str) -> None:
        self._users.pop((user, client), None)
        _, s, key = self._user_key(user)
        self._index(self._local_node(), _user_ref(user, client), add=False)
        await self._shards.call(s, "users", "zrem", key, client)

    async def disconnect_user(self, user: str, code: int) -> int:
        p, s, key = self._user_key(user)
        n = await self._shards.script(
            s,
            "user_disconnect",
            [key, keys.log_key(p)],
            [user, code, int(time.time() * 1000), keys.LOG_CAP],
            "disconnect",
        )
        return int(n)

    # --- the cleanup index --------------------------------------------------------------------
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

    def _index_calls(self, node: str, added: Sequence[bytes], removed: Sequence[bytes] = ()) -> list[Call]:
        key = keys.node_index_key(node)
        calls = [cmd("sadd", key, *added[i : i + 1000]) for i in range(0, len(added), 1000)]
        calls += [cmd("srem", key, *removed[i : i + 1000]) for i in range(0, len(removed), 1000)]
        return [*calls, cmd("pexpire", key, int(self._ttl * 2000))]

    async def flush_index(self) -> None:
        """Write the noted cleanup-index changes now (the index loop does it once a second)."""
        pending, self._index_changes = self._index_changes, {}
        for node, changes in pending.items():
            added = [ref for ref, add in changes.items() if add]
            removed = [ref for ref, add in changes.items() if not add]
            try:
                await self._shards.execute(self._shards.of_node(node), "index", self._index_calls(node, added, removed))
            except EngineUnavailable:  # put them back (newer changes win) and try again next time
                for ref, add in changes.items():
                    self._index_changes.setdefault(node, {}).setdefault(ref, add)

    async def drop_node_entries(self, node: str, signal: SignalFn) -> tuple[int, int]:
        """Remove what `node` registered, through its cleanup index: presence entries (with a
        `leave` signal where the namespace has join/leave) and connection counts. Returns how
        many of each."""
        presence = connections = 0
        refs = await self._shards.call(self._shards.of_node(node), "cleanup", "smembers", keys.node_index_key(node))
        for ref in refs:
            kind, *rest = msgpack.unpackb(ref, raw=False)
            if kind == "p":
                channel, client, user = rest
                await self._remove_entry(channel, client, "cleanup")
                if self._options(namespace_of(channel)).join_leave:
                    await signal(channel, leave_frame(channel, PresenceEntry(client, user, node)))
                presence += 1
            elif kind == "u":
                user, client = rest
                _, s, key = self._user_key(user)
                await self._shards.call(s, "cleanup", "zrem", key, client)
                connections += 1
        return presence, connections

    # --- keeping entries alive ----------------------------------------------------------------
    async def _refresh_loop(self) -> None:
        """Re-assert this process's presence entries and connection counts (they expire after
        PRESENCE_TTL without it, which is how a crashed node's entries disappear), in pipelined
        batches per shard."""
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                await self.refresh()
            except EngineUnavailable:
                log.warning("engine.refresh.failed")

    async def refresh(self, batch: int = 500) -> None:
        """Register again every presence entry, connection count and cleanup-index entry of this
        process (they travel in the shards' script batches, `batch` calls at a time)."""
        now = int(time.time() * 1000)
        calls = [self._presence_call(channel, e, now) for (channel, _), e in list(self._presence.items())]
        calls += [self._user_call(user, client, 1 << 30, now) for user, client in list(self._users)]
        await self._refresh_index()
        for start in range(0, len(calls), batch):
            replies = await asyncio.gather(
                *(
                    self._shards.run(s, script, ks, args, "refresh")
                    for s, script, ks, args in calls[start : start + batch]
                )
            )
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply

    async def _refresh_index(self) -> None:
        """Re-add every cleanup-index entry of this process and keep the index keys alive."""
        refs: dict[str, list[bytes]] = {}
        for (channel, _), entry in list(self._presence.items()):
            refs.setdefault(entry.node, []).append(_presence_ref(channel, entry))
        local = self._local_node()
        if local is not None:
            refs.setdefault(local, []).extend(_user_ref(user, client) for user, client in list(self._users))
        for node, members in refs.items():
            await self._shards.execute(self._shards.of_node(node), "refresh", self._index_calls(node, members))


def _presence_ref(channel: str, entry: PresenceEntry) -> bytes:
    ref: bytes = msgpack.packb(["p", channel, entry.client, entry.user])
    return ref


def _user_ref(user: str, client: str) -> bytes:
    ref: bytes = msgpack.packb(["u", user, client])
    return ref
