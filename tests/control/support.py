"""Helpers of the control-plane cluster tests: the admin API and /metrics read from the outside,
bounded polling, a readiness-aware client placement (what a load balancer with readiness probes
does), clients that timestamp their reconnects, a continuous publish load, and Redis inspection
of what a dead node left behind."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp
import websockets

from herald.core.engine.redis import keys
from tests.cluster.checker import Publisher, ResumingClient, check_no_loss, wait_delivered
from tests.cluster.conftest import Cluster, Member
from tests.conftest import make_token, seconds

API_KEY = "dev-key"

# --- admin API and metrics --------------------------------------------------------------------------


async def admin(
    member: Member, method: str, path: str, body: Any = None, *, key: str | None = API_KEY, raw: bytes | None = None
) -> tuple[int, Any]:
    return await asyncio.to_thread(member.proc.api, method, path, body, key=key, raw=raw)


async def cluster_doc(control: Member) -> dict[str, Any]:
    status, doc = await admin(control, "GET", "/admin/cluster")
    assert status == 200, (status, doc)
    return doc


def members_by_id(doc: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in doc["members"] if m["role"] == role}


async def wait_doc(
    control: Member, cond: Callable[[dict[str, Any]], bool], timeout: float, what: str, interval: float = 0.1
) -> dict[str, Any]:
    """Poll GET /admin/cluster until `cond(doc)`; return that document. AssertionError (with the
    last document) after `timeout` seconds (scaled)."""
    __tracebackhide__ = True
    deadline = time.monotonic() + seconds(timeout)
    doc: dict[str, Any] = {}
    while True:
        try:
            doc = await cluster_doc(control)
        except (OSError, AssertionError) as exc:
            doc = {"error": repr(exc)}
        else:
            if cond(doc):
                return doc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {seconds(timeout):.1f}s waiting for {what}; last /admin/cluster: "
                f"{json.dumps(_brief(doc))[:3000]}"
            )
        await asyncio.sleep(interval)


def _brief(doc: dict[str, Any]) -> Any:
    if "members" not in doc:
        return doc
    return {
        "leader": doc.get("leader"),
        "balance": doc.get("balance"),
        "members": [
            {
                k: m.get(k)
                for k in ("member", "state", "age", "connections", "partitions", "leader", "cleaned")
                if k in m
            }
            for m in doc["members"]
        ],
    }


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


async def metrics(member: Member) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = await admin(member, "GET", "/metrics", key=None)
    assert status == 200 and isinstance(text, str), (status, text)
    return parse_metrics(text)


async def metric(member: Member, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return (await metrics(member)).get((name, frozenset(labels.items())), 0.0)


async def eventually_true(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll an async or sync `cond` until truthy; AssertionError after `timeout` (scaled)."""
    __tracebackhide__ = True
    deadline = time.monotonic() + seconds(timeout)
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds(timeout):.1f}s waiting for {what}")
        await asyncio.sleep(interval)


# --- client placement and clients ------------------------------------------------------------------


class NodePicker:
    """Round-robin over the nodes whose /readyz answers 200, like a load balancer with readiness
    probes: polls every `period` seconds in the background (`async with picker:`). Nodes added to
    `cluster.nodes` later are picked up; a draining or dead node stops being chosen."""

    def __init__(self, cluster: Cluster, period: float = 0.1) -> None:
        self.cluster = cluster
        self.period = period
        self.ready: list[str] = []
        self._rr = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def all(self) -> list[str]:
        return [m.ws for m in self.cluster.nodes]

    def pick(self) -> str:
        choices = self.ready or self.all
        return choices[next(self._rr) % len(choices)]

    async def refresh(self) -> None:
        assert self._session is not None
        members = list(self.cluster.nodes)

        async def ready(m: Member) -> bool:
            try:
                async with self._session.get(m.http + "/readyz") as resp:  # type: ignore[union-attr]
                    return resp.status == 200
            except (aiohttp.ClientError, OSError, TimeoutError):
                return False

        flags = await asyncio.gather(*(ready(m) for m in members))
        self.ready = [m.ws for m, ok in zip(members, flags, strict=True) if ok]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self.refresh()

    async def __aenter__(self) -> NodePicker:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5))
        await self.refresh()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class PickingClient(ResumingClient):
    """A ResumingClient that connects wherever the `NodePicker` sends it (one pick per attempt)
    and timestamps every session it opens, so the reconnect rate can be measured."""

    def __init__(self, picker: NodePicker, user: str, channels: Iterable[str], **kw: Any) -> None:
        self._picker = picker
        self._choice: str | None = None
        self._choice_for: int | None = None
        self.opened_at: list[float] = []  # monotonic time of each session's `connected` frame
        super().__init__(picker.all, user, channels, **kw)

    @property  # type: ignore[override]
    def urls(self) -> list[str]:
        index = getattr(self, "_url_index", None)
        if index is None:  # during ResumingClient.__init__
            return self._picker.all
        if self._choice is None or self._choice_for != index:
            self._choice, self._choice_for = self._picker.pick(), index
        return [self._choice]

    @urls.setter
    def urls(self, value: list[str]) -> None:
        pass  # the picker decides

    async def _session(self, conn: Any, info: Any, session: int) -> None:
        self.opened_at.append(time.monotonic())
        await super()._session(conn, info, session)


def max_rate(times: Sequence[float], window: float = 1.0) -> int:
    """The most events within any `window` seconds."""
    ts = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def publish_until(
    pub: Publisher, channels: Sequence[str], rate: float, stop: asyncio.Event, tag: str = "load"
) -> None:
    """Publish to `channels` at `rate` messages/s in total until `stop` is set: one sequential
    loop per channel, so acknowledgement order is offset order."""
    interval = len(channels) / rate

    async def one(ci: int, channel: str) -> None:
        next_at = time.monotonic() + ci * interval / len(channels)
        for i in itertools.count():
            if stop.is_set():
                return
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            await pub.publish(channel, {"tag": tag, "ch": channel, "i": i}, via=i + ci)
            next_at = max(next_at + interval, time.monotonic() - interval)

    await asyncio.gather(*(one(ci, ch) for ci, ch in enumerate(channels)))


class Collector:
    """A raw JSON WebSocket client that records every frame (a background reader) and lets a test
    wait for frames matching a predicate."""

    def __init__(self, conn: Any, hello: dict[str, Any]) -> None:
        self.conn = conn
        self.hello = hello
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.closed_at: float | None = None  # monotonic time the connection ended
        self._ids = itertools.count(1)
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, user: str, **token_kw: Any) -> Collector:
        conn = await websockets.connect(
            f"{url}?token={make_token(user, **token_kw)}",
            subprotocols=["herald.json"],
            open_timeout=seconds(5),
            ping_interval=None,
            close_timeout=seconds(2),
        )
        async with asyncio.timeout(seconds(5)):
            hello = json.loads(await conn.recv())
        assert hello["type"] == "connected", hello
        return cls(conn, hello)

    @property
    def client(self) -> str:
        return str(self.hello["client"])

    @property
    def node(self) -> str:
        return str(self.hello["node"])

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                self.frames.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        self.closed_at = time.monotonic()
        self.close_code = self.conn.close_code

    def matching(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [f for f in self.frames if pred(f)]

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0, what: str = "a frame", count: int = 1
    ) -> list[dict[str, Any]]:
        __tracebackhide__ = True
        deadline = time.monotonic() + seconds(timeout)
        while len(found := self.matching(pred)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.client}@{self.node}: no {what} after {seconds(timeout):.1f}s; frames: {self.frames[-10:]}"
                )
            await asyncio.sleep(0.02)
        return found

    async def request(self, msg: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        rid = next(self._ids)
        await self.conn.send(json.dumps({**msg, "id": rid}))
        return (await self.wait_for(lambda f: f.get("id") == rid, timeout, f"reply to {msg}"))[0]

    async def subscribe(self, channel: str) -> dict[str, Any]:
        reply = await self.request({"type": "subscribe", "channel": channel})
        assert reply["type"] == "subscribed", reply
        return reply

    async def closed(self, timeout: float = 5.0) -> int | None:
        async with asyncio.timeout(seconds(timeout)):
            await asyncio.shield(self._task)
        return self.close_code

    async def close(self) -> None:
        try:
            async with asyncio.timeout(seconds(2)):
                await self.conn.close()
        except (TimeoutError, OSError):
            pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# --- Redis inspection ----------------------------------------------------------------------------


def _str(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def registrations_of(cluster: Cluster, node: str, clients: Iterable[str]) -> list[str]:
    """Everything Redis still holds for `node` (and its `clients`): subscription registry fields,
    presence entries and expiries, per-user connection counts, its inbox and cleanup index."""
    clients = set(clients)
    found = []
    for i, shard in enumerate(cluster.shards):
        r = shard.client()
        try:
            for key in r.scan_iter(match="subs:*", count=1000):
                found += [f"shard {i} {_str(key)}: {_str(f)!r}" for f in r.hkeys(key) if _str(f).endswith("\n" + node)]
            for key in r.scan_iter(match="presence:*", count=1000):
                found += [f"shard {i} {_str(key)}: {_str(f)}" for f in r.hkeys(key) if _str(f) in clients]
            for key in r.scan_iter(match="presence-exp:*", count=1000):
                found += [f"shard {i} {_str(key)}: {_str(f)}" for f in r.zrange(key, 0, -1) if _str(f) in clients]
            for key in r.scan_iter(match="uconn:*", count=1000):
                found += [f"shard {i} {_str(key)}: {_str(f)}" for f in r.zrange(key, 0, -1) if _str(f) in clients]
            for key in (keys.inbox_key(node), keys.node_index_key(node)):
                if r.exists(key):
                    found.append(f"shard {i} {key} exists")
        finally:
            r.close()
    return found


def has_key(cluster: Cluster, key: str) -> bool:
    for shard in cluster.shards:
        r = shard.client()
        try:
            if r.exists(key):
                return True
        finally:
            r.close()
    return False


def index_entries(cluster: Cluster, node: str) -> int:
    """How many entries `node`'s cleanup index holds in Redis (the node writes it once a second)."""
    total = 0
    for shard in cluster.shards:
        r = shard.client()
        try:
            total += int(r.scard(keys.node_index_key(node)))
        finally:
            r.close()
    return total


async def wait_indexed(cluster: Cluster, node: str, entries: int, timeout: float = 5.0) -> None:
    """Wait until `node` flushed its cleanup index (presence entries and user connections): what
    a crash right after connecting would miss is only removed by its TTL, by design."""
    await eventually_true(
        lambda: asyncio.to_thread(lambda: index_entries(cluster, node) >= entries),
        timeout,
        f"{entries} entries in the cleanup index of {node}",
    )


async def check_load(
    load: asyncio.Task[Any], pub: Publisher, clients: Sequence[ResumingClient]
) -> list[dict[str, Any]]:
    """After the (stopped) publishing task: every client got every acknowledged message once, in
    order (tests.cluster.checker); returns the per-client reports."""
    assert load.exception() is None, load.exception()
    published = pub.snapshot()
    assert not pub.unacked, pub.errors[:5]
    await wait_delivered(published, clients, timeout=20)
    return [check_no_loss(published, c) for c in clients]
