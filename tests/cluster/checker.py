"""A resuming WebSocket client, an at-least-once publisher and the no-loss checker of the cluster tests.

`ResumingClient` behaves like a client SDK: it remembers the last (offset, epoch) of every channel,
reconnects to the next node of its list after any disconnect, resubscribes every channel with
`since`, and drops a message it already has (same epoch, offset not above the last one). Everything
it sees is recorded so that `check_no_loss` can prove DESIGN invariants 1-3 from the outside:

* every acknowledged publish of a channel (offset returned by the HTTP API) after the client's
  first `subscribed` reply for that channel is received, exactly once, in offset order;
* the only excuse for a missing message is a `recovered:false` reply the client got for that
  channel: it excuses what lay between the client's position and the first message of the
  epoch/offset that reply announced — nothing else.

`Publisher` publishes through the server HTTP API of several endpoints, retrying a failed request on
the next endpoint with the same idempotency key, so each message is acknowledged at most once and
its offset is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.conftest import make_token, seconds

__all__ = [
    "Pub",
    "Received",
    "ChannelLog",
    "ResumingClient",
    "Publisher",
    "check_no_loss",
    "caught_up",
    "wait_delivered",
    "eventually",
    "eventually_async",
    "offset_key",
    "running",
    "steady_load",
]

API_KEY = "dev-key"
#: Close codes after which an SDK does not reconnect (CONTRACT §5).
FINAL_CODES = frozenset({1000, 4003})


def offset_key(offset: str) -> tuple[int, int]:
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


async def eventually(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll `cond` until true; return the seconds it took. AssertionError after `timeout` (scaled)."""
    __tracebackhide__ = True
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds(timeout)):
            while not cond():
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds(timeout):.1f}s waiting for {what}") from None
    return time.monotonic() - started


async def eventually_async(
    cond: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.05
) -> float:
    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds(timeout)):
            while not await cond():
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds(timeout):.1f}s waiting for {what}") from None
    return time.monotonic() - started


# --- what was published ---------------------------------------------------------------------------


class Pub(NamedTuple):
    """One acknowledged publish. `offset`/`epoch` are None until resolved (POST /notify)."""

    offset: str | None
    epoch: str | None
    data: Any
    event: str = "message"

    @property
    def key(self) -> tuple[int, int]:
        assert self.offset is not None, f"unresolved publish {self.data!r}"
        return offset_key(self.offset)


class Publisher:
    """Publishes through the server API of `endpoints` (http base URLs), round-robin or pinned with
    `via`; a failed attempt (connection error, timeout, 5xx) is retried on the next endpoint with
    the same idempotency key. Acknowledged publishes land in `acked[channel]` with their offsets."""

    def __init__(
        self, endpoints: Sequence[str], *, api_key: str = API_KEY, attempts: int = 12, request_timeout: float = 3.0
    ) -> None:
        self.endpoints = list(endpoints)
        self.api_key = api_key
        self.attempts = attempts
        self.request_timeout = request_timeout
        self.acked: dict[str, list[Pub]] = defaultdict(list)
        self.unacked: dict[str, list[Any]] = defaultdict(list)
        self.retries = 0
        self.errors: list[str] = []
        self._rr = itertools.count()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Publisher:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds(self.request_timeout)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    async def request(self, base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._session is not None, "use `async with Publisher(...)`"
        async with self._session.request(
            method, base + path, json=body, headers={"Authorization": f"apikey {self.api_key}"}
        ) as resp:
            raw = await resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw.decode(errors="replace")

    async def _post_retrying(self, path: str, body: dict[str, Any], via: int | None) -> tuple[int, Any] | None:
        start = next(self._rr) if via is None else via
        delay = 0.02
        for attempt in range(self.attempts):
            base = self.endpoints[(start + attempt) % len(self.endpoints)]
            try:
                status, reply = await self.request(base, "POST", path, body)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, reply = -1, repr(exc)
            if status == 200:
                return status, reply
            if status != -1 and status < 500:
                raise AssertionError(f"POST {base}{path} {body!r} -> {status} {reply!r}")
            self.retries += 1
            self.errors.append(f"{base}{path}: {status} {reply!r}"[:300])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.3)
        return None

    async def publish(self, channel: str, data: Any, *, via: int | None = None, event: str | None = None) -> Pub | None:
        body: dict[str, Any] = {"channel": channel, "data": data, "idempotency_key": uuid.uuid4().hex}
        if event is not None:
            body["event"] = event
        res = await self._post_retrying("/api/publish", body, via)
        if res is None:
            self.unacked[channel].append(data)
            return None
        reply = res[1]
        assert reply["channel"] == channel, reply
        pub = Pub(reply["offset"], reply["epoch"], data, event or "message")
        self.acked[channel].append(pub)
        return pub

    async def broadcast(self, channels: Sequence[str], data: Any, *, via: int | None = None) -> list[Pub]:
        """POST /api/broadcast once (no idempotency key in the contract: no retry)."""
        base = self.endpoints[(next(self._rr) if via is None else via) % len(self.endpoints)]
        status, reply = await self.request(base, "POST", "/api/broadcast", {"channels": list(channels), "data": data})
        assert status == 200, (base, status, reply)
        pubs = []
        for res in reply["results"]:
            pub = Pub(res["offset"], res["epoch"], data)
            self.acked[res["channel"]].append(pub)
            pubs.append(pub)
        assert [r["channel"] for r in reply["results"]] == list(channels), reply
        return pubs

    async def notify(self, user: str, message: Any, *, via: int | None = None) -> None:
        """POST /notify once; the offset is unknown until `resolve()` reads the history."""
        base = self.endpoints[(next(self._rr) if via is None else via) % len(self.endpoints)]
        status, reply = await self.request(base, "POST", "/notify", {"userId": user, "message": message})
        assert (status, reply) == (200, {"sent": True}), (base, status, reply)
        self.acked[f"user:{user}"].append(Pub(None, None, message, "notification"))

    async def resolve(self, via: int = 0) -> None:
        """Fill in the offsets of /notify publishes from each channel's history (data is unique)."""
        base = self.endpoints[via % len(self.endpoints)]
        for channel, pubs in self.acked.items():
            if all(p.offset is not None for p in pubs):
                continue
            status, reply = await self.request(base, "GET", f"/api/history/{channel}?limit=1000")
            assert status == 200, (channel, status, reply)
            by_data = {json.dumps(m["data"], sort_keys=True): m for m in reply["messages"]}
            for i, p in enumerate(pubs):
                if p.offset is None:
                    m = by_data.get(json.dumps(p.data, sort_keys=True))
                    assert m is not None, f"{channel}: notification {p.data!r} is not in the history"
                    assert m["event"] == p.event, m
                    pubs[i] = Pub(m["offset"], m["epoch"], p.data, p.event)

    def snapshot(self) -> dict[str, list[Pub]]:
        return {ch: list(pubs) for ch, pubs in self.acked.items()}


async def steady_load(
    publisher: Publisher, channels: Sequence[str], *, rate: float, duration: float, tag: str = "load"
) -> None:
    """Publish to `channels` at `rate` messages/s in total for `duration` s: one sequential loop per
    channel (so acknowledgement order is offset order), bounded in count and in time."""
    per_channel = max(1, int(rate * duration / len(channels)))
    interval = duration / per_channel
    t0 = time.monotonic()
    deadline = t0 + seconds(duration) + seconds(20)

    async def one(ci: int, channel: str) -> None:
        for i in range(per_channel):
            delay = t0 + i * interval + ci * interval / len(channels) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() > deadline:
                raise AssertionError(f"load on {channel} fell behind: {i}/{per_channel} after {deadline - t0:.0f}s")
            await publisher.publish(channel, {"tag": tag, "ch": channel, "i": i}, via=i + ci)

    await asyncio.gather(*(one(ci, ch) for ci, ch in enumerate(channels)))


# --- what a client received ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    offset: str
    epoch: str
    data: Any
    event: str
    session: int  # which connection of the client delivered it (0, 1, ...)

    @property
    def key(self) -> tuple[int, int]:
        return offset_key(self.offset)


@dataclass
class Reset:
    """A `recovered:false` reply: the client's position before it, and what the server announced."""

    before: tuple[int, int]  # key of the client's position when it asked to resume
    epoch: str
    offset: str
    session: int


@dataclass
class ChannelLog:
    channel: str
    baseline: tuple[str, str] | None = None  # (offset, epoch) of the first `subscribed` reply
    position: tuple[str, str] | None = None  # (offset, epoch): what `since` would be now
    messages: list[Received] = field(default_factory=list)  # accepted, in arrival order
    duplicates: list[Received] = field(default_factory=list)  # an offset received before
    out_of_order: list[Received] = field(default_factory=list)  # not above the position, never received
    early: int = 0  # arrived on a new connection before the resubscribe reply (re-sent after it)
    resets: list[Reset] = field(default_factory=list)
    resumed: int = 0  # `recovered:true` replies
    live: bool = False  # subscribed on the current connection
    _seen: set[str] = field(default_factory=set)

    @property
    def recovered_false(self) -> int:
        return len(self.resets)

    def on_subscribed(self, frame: dict[str, Any], asked_since: bool, session: int) -> None:
        self.live = True
        if self.baseline is None:
            self.baseline = self.position = (frame["offset"], frame["epoch"])
            return
        if not asked_since:  # cannot happen once a baseline exists; keep the strictest reading
            raise AssertionError(f"{self.channel}: resubscribed without a position")
        if frame["recovered"]:
            self.resumed += 1
            assert frame["epoch"] == self.position[1], (self.channel, frame, self.position)
            return
        assert frame["missed"] == 0, frame
        self.resets.append(Reset(offset_key(self.position[0]), frame["epoch"], frame["offset"], session))
        self.position = (frame["offset"], frame["epoch"])

    def on_message(self, frame: dict[str, Any], session: int) -> None:
        if not self.live:
            self.early += 1
            return
        r = Received(frame["offset"], frame["epoch"], frame.get("data"), frame.get("event", "message"), session)
        if self.position is not None and r.epoch == self.position[1] and r.key <= offset_key(self.position[0]):
            (self.duplicates if r.offset in self._seen else self.out_of_order).append(r)
            return
        self.messages.append(r)
        self._seen.add(r.offset)
        self.position = (r.offset, r.epoch)


@dataclass
class SessionInfo:
    url: str
    node: str | None = None
    close_code: int | None = None
    close_reason: str = ""
    subscribed: bool = False  # every channel got its `subscribed` reply on this connection
    advisories: list[dict[str, Any]] = field(default_factory=list)


class ResumingClient:
    """One user's WebSocket connection that survives node failures (see the module docstring)."""

    def __init__(
        self,
        urls: Sequence[str],
        user: str,
        channels: Iterable[str],
        *,
        start: int = 0,
        max_attempts: int = 60,
        connect_timeout: float = 5.0,
    ) -> None:
        self.urls = list(urls)
        self.user = user
        self.name = f"{user}@{start % len(self.urls)}"
        personal = f"user:{user}"
        self.channels = [personal, *(c for c in dict.fromkeys(channels) if c != personal)]
        self.logs = {ch: ChannelLog(ch) for ch in self.channels}
        self.sessions: list[SessionInfo] = []
        self.connect_failures: list[str] = []
        self.failure: str | None = None
        self._url_index = start
        self._max_attempts = max_attempts
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self._ready = asyncio.Event()
        self._gate = asyncio.Event()
        self._gate.set()
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pongs: dict[int, asyncio.Future[None]] = {}

    # --- public -------------------------------------------------------------------------------
    @property
    def reconnects(self) -> int:
        return max(0, len(self.sessions) - 1)

    @property
    def node(self) -> str | None:
        return self.sessions[-1].node if self.sessions else None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def recovered_false(self, channel: str) -> int:
        return self.logs[channel].recovered_false

    async def start(self, timeout: float = 10.0) -> ResumingClient:
        self._task = asyncio.create_task(self._run(), name=f"client.{self.name}")
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Connected, and every channel subscribed on the current connection."""
        try:
            async with asyncio.timeout(seconds(timeout)):
                while not self._ready.is_set():
                    if self.failure is not None or (self._task is not None and self._task.done()):
                        raise AssertionError(f"{self.name}: gave up: {self.failure}")
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: not ready after {seconds(timeout):.1f}s "
                f"(sessions {self.sessions}, failures {self.connect_failures[-3:]})"
            ) from None

    def hold(self) -> None:
        """After the next disconnect, wait for `release()` before reconnecting."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def ping(self, timeout: float = 5.0) -> None:
        """A protocol ping on the current connection; AssertionError unless a pong comes back."""
        conn = self._conn
        assert conn is not None, f"{self.name}: not connected"
        cid = next(self._ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[cid] = fut
        try:
            await conn.send(json.dumps({"type": "ping", "id": cid}))
            async with asyncio.timeout(seconds(timeout)):
                await fut
        except (TimeoutError, ConnectionClosed) as exc:
            raise AssertionError(f"{self.name}: no pong ({exc!r})") from None
        finally:
            self._pongs.pop(cid, None)

    async def stop(self) -> None:
        self._stopped = True
        self._gate.set()
        if self._conn is not None:
            try:
                async with asyncio.timeout(seconds(2)):
                    await self._conn.close()
            except (TimeoutError, ConnectionClosed, OSError):
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:
                pass

    def summary(self) -> str:
        nodes = [s.node for s in self.sessions]
        codes = [s.close_code for s in self.sessions if s.close_code is not None]
        return f"{self.name}: nodes {nodes}, close codes {codes}"

    # --- connection loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        delay = 0.05
        while not self._stopped:
            url = self.urls[self._url_index % len(self.urls)]
            token = make_token(self.user)
            try:
                conn = await websockets.connect(
                    f"{url}?token={token}",
                    subprotocols=["herald.json"],
                    open_timeout=seconds(self._connect_timeout),
                    ping_interval=None,
                    close_timeout=seconds(2),
                    max_size=1 << 24,
                    max_queue=None,
                )
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                failures += 1
                self.connect_failures.append(f"{url}: {exc!r}"[:200])
                if failures >= self._max_attempts:
                    self.failure = f"{failures} connection attempts failed: {self.connect_failures[-3:]}"
                    return
                self._url_index += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            info = SessionInfo(url)
            self.sessions.append(info)
            self._conn = conn
            try:
                await self._session(conn, info, len(self.sessions) - 1)
            except ConnectionClosed:
                pass
            except Exception as exc:  # a protocol surprise: record it, the checker reports it
                self.failure = self.failure or f"session on {url} failed: {exc!r}"
            finally:
                self._ready.clear()
                self._conn = None
                for log in self.logs.values():
                    log.live = False
                for fut in self._pongs.values():
                    if not fut.done():
                        fut.set_exception(ConnectionClosed(None, None))
                info.close_code = conn.close_code
                info.close_reason = conn.close_reason or ""
                await conn.close()
            if self._stopped or self.failure is not None or info.close_code in FINAL_CODES:
                if info.close_code in FINAL_CODES and not self._stopped and self.failure is None:
                    self.failure = f"closed with final code {info.close_code} {info.close_reason!r}"
                return
            if info.subscribed:
                failures, delay = 0, 0.05
            else:
                failures += 1
                if failures >= self._max_attempts:
                    self.failure = f"{failures} sessions ended before subscribing: {self.sessions[-3:]}"
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            await self._gate.wait()
            self._url_index += 1  # the next node of the list

    async def _session(self, conn: Any, info: SessionInfo, session: int) -> None:
        """Subscribe everything, then record frames until the connection closes (ConnectionClosed)."""
        async with asyncio.timeout(seconds(self._connect_timeout)):
            first = json.loads(await conn.recv())
        if first.get("type") != "connected":
            raise AssertionError(f"{self.name}: first frame {first!r}")
        assert first["user"] == self.user, first
        info.node = first["node"]
        pending: dict[int, tuple[str, bool]] = {}  # request id -> (channel, asked with since)
        retry_at: dict[str, float] = {}
        tries: dict[str, int] = defaultdict(int)

        async def subscribe(channel: str) -> None:
            log = self.logs[channel]
            msg: dict[str, Any] = {"type": "subscribe", "channel": channel, "id": next(self._ids)}
            if log.position is not None:
                msg["since"] = {"offset": log.position[0], "epoch": log.position[1]}
            pending[msg["id"]] = (channel, "since" in msg)
            tries[channel] += 1
            await conn.send(json.dumps(msg))

        for channel in self.channels:
            await subscribe(channel)
        while True:
            timeout = None
            if retry_at:
                timeout = max(0.0, min(retry_at.values()) - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    raw = await conn.recv()
            except TimeoutError:
                now = time.monotonic()
                for channel, at in list(retry_at.items()):
                    if at <= now:
                        del retry_at[channel]
                        await subscribe(channel)
                continue
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "message":
                log = self.logs.get(frame["channel"])
                if log is not None:
                    log.on_message(frame, session)
            elif kind == "subscribed":
                channel, asked_since = pending.pop(frame["id"])
                assert frame["channel"] == channel, frame
                self.logs[channel].on_subscribed(frame, asked_since, session)
                if all(log.live for log in self.logs.values()):
                    self._ready.set()
                    info.subscribed = True
            elif kind == "error" and frame.get("id") in pending:
                channel, _ = pending.pop(frame["id"])
                if frame.get("code") != 503 or tries[channel] >= 25:
                    self.failure = f"subscribe {channel} refused: {frame!r}"
                    await conn.close()
                    raise ConnectionClosed(None, None)
                retry_at[channel] = time.monotonic() + 0.2  # engine unavailable: try again soon
            elif kind == "pong":
                fut = self._pongs.get(frame.get("id"))
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind == "reconnect":
                info.advisories.append(frame)


@contextlib.asynccontextmanager
async def running(clients: Sequence[ResumingClient], timeout: float = 15.0) -> AsyncIterator[Sequence[ResumingClient]]:
    """Start `clients` (all ready on return) and stop every one of them on the way out."""
    try:
        await asyncio.gather(*(c.start(timeout) for c in clients))
        yield clients
    finally:
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)


# --- the checker -----------------------------------------------------------------------------------


def caught_up(published: dict[str, list[Pub]], client: ResumingClient) -> bool:
    """Whether the client's position reached the newest acknowledged publish of each of its channels."""
    for channel, pubs in published.items():
        log = client.logs.get(channel)
        if log is None or not pubs:
            continue
        if log.position is None:
            return False
        last = max(pubs, key=lambda p: p.key)
        pos_offset, pos_epoch = log.position
        if pos_epoch == last.epoch and offset_key(pos_offset) >= last.key:
            continue
        if log.baseline is not None and offset_key(log.baseline[0]) >= last.key and log.baseline[1] == last.epoch:
            continue
        return False
    return True


async def wait_delivered(
    published: dict[str, list[Pub]], clients: Sequence[ResumingClient], timeout: float = 15.0
) -> None:
    """Wait until every client caught up with `published` (then run `check_no_loss` for the verdict).
    On timeout, the checker's account of what is missing is raised instead of a bare timeout."""
    __tracebackhide__ = True
    try:
        await eventually(
            lambda: all(caught_up(published, c) or c.failure is not None for c in clients),
            timeout,
            "every client to catch up",
        )
        return
    except AssertionError:
        pass
    behind = [c for c in clients if not caught_up(published, c)]
    for c in behind:
        check_no_loss(published, c)
    raise AssertionError(
        f"clients behind after {seconds(timeout):.0f}s but nothing missing? {[c.summary() for c in behind]}"
    )


def check_no_loss(
    published: dict[str, list[Pub]],
    client: ResumingClient,
    *,
    unacked: dict[str, list[Any]] | None = None,
    allow_duplicates: bool = False,
) -> dict[str, Any]:
    """Assert that `client` received every acknowledged publish of each of its channels after it
    subscribed, exactly once and in offset order, except what a `recovered:false` reply excused.

    `published[channel]` lists the acknowledged publishes (any order; ordered here by offset).
    `unacked[channel]` lists data whose publish failed: receiving those is allowed, not required.
    Returns a summary (messages, duplicates, early, recovered_false, reconnects) for reporting."""
    __tracebackhide__ = True
    problems: list[str] = []
    total = dups = early = 0
    resets: dict[str, int] = {}
    if client.failure is not None:
        problems.append(f"client failed: {client.failure}")
    for channel, raw_pubs in published.items():
        log = client.logs.get(channel)
        if log is None:
            continue
        pubs = sorted(raw_pubs, key=lambda p: p.key)
        offsets = [p.offset for p in pubs]
        if len(set(offsets)) != len(offsets):
            problems.append(f"{channel}: two acknowledged publishes share an offset: {offsets}")
        by_offset = {p.offset: p for p in pubs}
        total += len(log.messages)
        dups += len(log.duplicates)
        early += log.early
        resets[channel] = log.recovered_false
        if log.baseline is None:
            problems.append(f"{channel}: never subscribed")
            continue
        base_key = offset_key(log.baseline[0])
        # What each recovered:false excused: from the position the client asked to resume from, up
        # to (not including) the first publish of the announced epoch after the announced offset.
        excused: set[str] = set()
        for reset in log.resets:
            resume_key = offset_key(reset.offset)
            stop = next((i for i, p in enumerate(pubs) if p.epoch == reset.epoch and p.key > resume_key), len(pubs))
            excused.update(p.offset for p in pubs[:stop] if p.key > reset.before)
        required = [p for p in pubs if p.key > base_key and p.offset not in excused]
        got = {r.offset: r for r in log.messages}
        missing = [p for p in required if p.offset not in got]
        if missing:
            problems.append(
                f"{channel}: LOST {len(missing)} of {len(required)} required messages, e.g. "
                f"{[(p.offset, p.epoch, p.data) for p in missing[:3]]}; received {len(log.messages)}, "
                f"last received {log.messages[-1].offset if log.messages else None}, resets {log.resets}"
            )
        allowed_extra = {json.dumps(d, sort_keys=True) for d in (unacked or {}).get(channel, ())}
        for r in log.messages:
            p = by_offset.get(r.offset)
            if p is None:
                if json.dumps(r.data, sort_keys=True) not in allowed_extra:
                    problems.append(f"{channel}: received {r.offset} {r.data!r}, which nobody acknowledged")
            elif (p.data, p.event, p.epoch) != (r.data, r.event, r.epoch):
                problems.append(
                    f"{channel}: offset {r.offset} carried {(r.data, r.event, r.epoch)!r}, "
                    f"published {(p.data, p.event, p.epoch)!r}"
                )
        keys = [r.key for r in log.messages if r.offset in by_offset]
        if any(b <= a for a, b in itertools.pairwise(keys)):
            problems.append(f"{channel}: received out of offset order: {[r.offset for r in log.messages][:20]}")
        if log.out_of_order:
            problems.append(
                f"{channel}: {len(log.out_of_order)} messages arrived after a later one (ORDER), e.g. "
                f"{[(r.offset, r.data) for r in log.out_of_order[:3]]}"
            )
        if log.duplicates and not allow_duplicates:
            problems.append(
                f"{channel}: {len(log.duplicates)} DUPLICATES, e.g. "
                f"{[(r.offset, r.session) for r in log.duplicates[:3]]}"
            )
    if problems:
        raise AssertionError(f"{client.summary()}:\n  " + "\n  ".join(problems))
    return {
        "client": client.name,
        "messages": total,
        "duplicates": dups,
        "early": early,
        "recovered_false": {c: n for c, n in resets.items() if n},
        "reconnects": client.reconnects,
    }
