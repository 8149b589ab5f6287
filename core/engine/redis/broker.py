"""RedisBroker: publish, history, subscription registrations and signals (the Broker role).

A publication is one Lua call on its partition's shard that appends to the channel history and to
the partition log atomically (publish_append.lua). Routers read the logs and forward to node
inboxes (inbox.py); a subscription is a record in the same log, so routers apply it in order
with the publications (subscription_set.lua).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from ...config import NamespaceOptions
from ...protocol.envelope import ChannelName, Epoch, Offset, Position, namespace_of, offset_key
from ...protocol.errors import EngineUnavailable
from ..base import Broker, DeliverFn, HistoryResult, PublishRequest, PublishResult
from . import keys
from .codec import decoded, pack_payload, unpack_publication
from .inbox import Inboxes
from .shards import Shards

__all__ = ["RedisBroker"]


class RedisBroker(Broker):
    def __init__(
        self,
        shards: Shards,
        inboxes: Inboxes,
        *,
        options: Callable[[str], NamespaceOptions] = lambda ns: NamespaceOptions(),
        idempotency_window: float = 300.0,
    ) -> None:
        self._shards = shards
        self._inboxes = inboxes
        self._options = options
        self._idempotency_ms = int(idempotency_window * 1000)
        self._subscriptions: dict[tuple[str, str], None] = {}  # (node, channel) registered here
        self._epochs = random.Random()  # candidate epochs (see _new_epoch)

    def _new_epoch(self) -> str:
        """A candidate epoch, used only by a partition that has none (new, or its data lost).
        Unique, not secret: a private PRNG seeded from the OS is enough, and cheap (and no
        `random.seed()` elsewhere in the process can make it repeat)."""
        return f"{self._epochs.getrandbits(32):08x}"

    # --- publishing ---------------------------------------------------------------------------
    def _publish_call(self, r: PublishRequest) -> tuple[int, list[str], list[Any]]:
        """(shard, keys, args) of the publish_append script for one message."""
        p = self._shards.partition(r.channel)
        opts = self._options(namespace_of(r.channel))
        ks = [
            keys.hist_key(p, r.channel),
            keys.log_key(p),
            keys.epoch_key(p),
            keys.idem_key(p, r.idempotency_key or "-"),
        ]
        args = [
            r.channel,
            pack_payload(r.event, r.sender, r.data),
            opts.history_size,
            int(opts.history_ttl * 1000),
            self._new_epoch(),
            "1" if r.idempotency_key else "0",
            self._idempotency_ms,
            keys.LOG_CAP,
        ]
        return self._shards.of_partition(p), ks, args

    async def publish(
        self,
        channel: ChannelName,
        data: Any,
        *,
        event: str = "message",
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        request = PublishRequest(channel, data, event, sender, idempotency_key)
        s, ks, args = self._publish_call(request)
        return _publish_result(request, await self._shards.run(s, "publish_append", ks, args, "publish"))

    async def publish_batch(self, requests: Sequence[PublishRequest]) -> list[PublishResult | Exception]:
        """Every message its own atomic script, all of them in the shards' next batches."""
        futures = [
            self._shards.run(s, "publish_append", ks, args, "publish")
            for s, ks, args in map(self._publish_call, requests)
        ]
        out: list[PublishResult | Exception] = []
        for r, reply in zip(requests, await asyncio.gather(*futures), strict=True):
            try:
                out.append(_publish_result(r, reply))
            except EngineUnavailable as exc:
                out.append(exc)
        return out

    async def signal(self, channel: ChannelName, frame: dict[str, Any]) -> None:
        p = self._shards.partition(channel)
        await self._shards.call(
            self._shards.of_partition(p),
            "signal",
            "xadd",
            keys.log_key(p),
            {"k": "g", "c": channel, "f": msgpack.packb(frame)},
            maxlen=keys.LOG_CAP,
            approximate=True,
        )

    # --- history ------------------------------------------------------------------------------
    async def history(
        self, channel: ChannelName, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryResult:
        p = self._shards.partition(channel)
        opts = self._options(namespace_of(channel))
        count = -1 if limit is None else limit
        if count == 0 and since is None:
            count = 0
        res = await self._shards.script(
            self._shards.of_partition(p),
            "history_read",
            [keys.hist_key(p, channel), keys.epoch_key(p)],
            [self._new_epoch(), int(opts.history_ttl * 1000), since.offset if since else "", count],
            "history",
        )
        epoch, last, dropped = Epoch(decoded(res[0])), decoded(res[1]), decoded(res[2])
        entries = res[3]
        if since is None:
            if limit is not None:
                entries = list(reversed(entries))[-limit:] if limit else []
            messages = [_entry(channel, epoch, e) for e in entries]
            return HistoryResult(channel, epoch, Offset(last), False, messages)
        skey = since.key
        recovered = since.epoch == epoch and offset_key(dropped) <= skey <= offset_key(last)
        messages = [_entry(channel, epoch, e) for e in entries] if recovered else []
        return HistoryResult(channel, epoch, Offset(last), recovered, messages)

    # --- subscriptions ------------------------------------------------------------------------
    async def _set_subscription(self, node: str, channel: str, on: bool) -> None:
        if on:
            self._subscriptions[(node, channel)] = None
        else:
            self._subscriptions.pop((node, channel), None)
        p = self._shards.partition(channel)
        await self._shards.script(
            self._shards.of_partition(p),
            "subscription_set",
            [keys.subs_key(p), keys.log_key(p)],
            [channel, node, "1" if on else "0", keys.LOG_CAP],
            "subscribe",
        )

    async def subscribe(self, node: str, channel: ChannelName) -> None:
        await self._set_subscription(node, channel, True)

    async def unsubscribe(self, node: str, channel: ChannelName) -> None:
        await self._set_subscription(node, channel, False)

    async def reassert_subscriptions(self, shard: int | None = None) -> None:
        """Register again every subscription made through this process (on one shard, or all)."""
        for node, channel in list(self._subscriptions):
            if shard is None or self._shards.of_channel(channel) == shard:
                await self._set_subscription(node, channel, True)

    async def drop_node_subscriptions(self, node: str, partitions: int) -> int:
        """Remove every subscription registration of `node` (a dead node's cleanup), found by
        scanning each partition's registry (bounded by the number of partitions)."""
        removed = 0
        pattern = "*\n" + _glob_escape(node)
        for p in range(partitions):
            s = self._shards.of_partition(p)
            fields = await self._shards.hscan_fields(s, "cleanup", keys.subs_key(p), pattern)
            for channel in (decoded(f).partition("\n")[0] for f in fields):
                await self._shards.script(
                    s,
                    "subscription_set",
                    [keys.subs_key(p), keys.log_key(p)],
                    [channel, node, "0", keys.LOG_CAP],
                    "cleanup",
                )
                removed += 1
        return removed

    # --- deliveries to this process's node ----------------------------------------------------
    async def attach(self, node: str, deliver: DeliverFn) -> None:
        await self._inboxes.attach(node, deliver)

    def detach(self, node: str) -> None:
        self._inboxes.detach(node)

    def backlog(self, node: str) -> int:
        return self._inboxes.backlog(node)


def _entry(channel: str, epoch: str, entry: Any) -> Any:
    offset, fields = entry
    values = dict(zip(fields[::2], fields[1::2], strict=True)) if isinstance(fields, list) else fields
    return unpack_publication(channel, decoded(offset), epoch, values[b"p"])


def _publish_result(request: PublishRequest, reply: Any) -> PublishResult:
    """The publish script's reply [offset, epoch], or the EngineUnavailable it stands for."""
    if isinstance(reply, Exception):
        raise reply
    return PublishResult(request.channel, Offset(decoded(reply[0])), Epoch(decoded(reply[1])))


def _glob_escape(text: str) -> str:
    """`text` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
