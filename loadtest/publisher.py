"""Publishing at a fixed rate: the server API publisher, the WebSocket chat pacer, and the
reconnect-storm trigger. Every loop is bounded by a message count and a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson

from .accounting import PublishLog
from .client import Client
from .config import LoadConfig
from .marker import make_data, make_text, padding
from .plan import Destination, Plan
from .stats import WorkerStats

__all__ = ["HttpPublisher", "pace", "chat_pacer", "storms", "sleep_until_ns"]

_REQUEST_SECONDS = 10.0
_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=_REQUEST_SECONDS)
_JSON = {"Content-Type": "application/json"}


async def sleep_until_ns(at_ns: int) -> None:
    delay = (at_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def pace(
    rate: float, total: int, t0_ns: int, deadline_ns: int, batch: int, send: Callable[[int], Awaitable[None]]
) -> int:
    """Call `send(n)` so that message k goes out at t0 + k/rate, up to `batch` at once when late.
    Stops after `total` messages or at `deadline_ns`; returns how many were sent."""
    period = 1e9 / rate
    k = 0
    while k < total:
        now = time.monotonic_ns()
        if now >= deadline_ns:
            break
        due = min(total, int((now - t0_ns) / period) + 1)
        if k < due:
            n = min(due - k, batch)
            await send(n)
            k += n
        else:
            await asyncio.sleep(max(0.0005, (t0_ns + k * period - now) / 1e9))
    return k


class HttpPublisher:
    """Publishes this worker's share of the rate through the server API, with at most
    `publish_concurrency` requests in flight. The marker's timestamp is taken just before each
    request goes out."""

    def __init__(self, cfg: LoadConfig, plan: Plan, worker: int, stats: WorkerStats, publog: PublishLog) -> None:
        self.cfg, self.stats, self.publog = cfg, stats, publog
        self.dests = plan.destinations(worker)
        self.pads: dict[str, str] = {}
        self.api = cfg.api_url
        self._slots = asyncio.Semaphore(cfg.publish_concurrency)
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, session: aiohttp.ClientSession, t0_ns: int) -> None:
        cfg = self.cfg
        rate = cfg.rate / cfg.workers
        total = max(1, round(rate * cfg.duration))
        deadline = t0_ns + int((cfg.duration + 5.0) * 1e9)

        async def send(n: int) -> None:
            await self._slots.acquire()
            task = asyncio.create_task(self._request(session, [next(self.dests) for _ in range(n)]))  # noqa: RUF006 - kept in _inflight
            self._inflight.add(task)
            task.add_done_callback(self._done)

        await pace(rate, total, t0_ns, deadline, cfg.batch, send)
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=_REQUEST_SECONDS + 1)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slots.release()

    def _entry(self, dest: Destination, seq: int, ts: int) -> dict[str, Any]:
        pad = self.pads.get(dest.pub)
        if pad is None:
            pad = self.pads[dest.pub] = padding(self.cfg.payload_size, dest.pub)
        if dest.event == "chat":
            return {"channel": dest.channel, "data": {"text": make_text(dest.pub, seq, ts, pad)}, "event": "chat"}
        data = make_data(dest.pub, seq, ts, pad)
        if dest.event == "notification":
            return {"userId": dest.user, "message": data}
        return {"channel": dest.channel, "data": data}

    async def _request(self, session: aiohttp.ClientSession, dests: Sequence[Destination]) -> None:
        seqs = [self.publog.next_seq(d.channel, d.pub) for d in dests]
        ts = time.monotonic_ns()
        entries = [self._entry(d, s, ts) for d, s in zip(dests, seqs, strict=True)]
        if len(entries) > 1:
            path, body = "/api/publish/batch", {"messages": entries}
        else:
            path, body = ("/notify" if "userId" in entries[0] else "/api/publish"), entries[0]
        counts, errors = self.stats.counts, self.stats.kinds["publish_errors"]
        counts["published"] += len(dests)
        self.stats.published(len(dests))
        failed: list[int] = []
        try:
            async with session.post(
                self.api + path, data=orjson.dumps(body), headers=_JSON, timeout=_REQUEST_TIMEOUT
            ) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    errors[f"http_{resp.status}"] += len(dests)
                    failed = list(range(len(dests)))
                elif len(entries) > 1:
                    results = orjson.loads(payload).get("results", [])
                    for k in range(len(dests)):
                        res = results[k] if k < len(results) else None
                        if not isinstance(res, dict) or "error" in res:
                            code = res["error"].get("code", "?") if isinstance(res, dict) else "missing"
                            errors[f"batch_{code}"] += 1
                            failed.append(k)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            errors[type(exc).__name__] += len(dests)
            failed = list(range(len(dests)))
        for k in failed:
            self.publog.unconfirmed(dests[k].channel, dests[k].pub, seqs[k])
        counts["unconfirmed"] += len(failed)
        counts["confirmed"] += len(dests) - len(failed)


async def chat_pacer(cfg: LoadConfig, clients: Sequence[Client], t0_ns: int) -> None:
    """Chat over WebSocket: the local clients take turns sending to their peer, at this worker's
    share of the rate. A client that is offline at its turn skips it (nothing is numbered)."""
    rate = cfg.rate / cfg.workers
    total = max(1, round(rate * cfg.duration))
    turn = 0

    async def send(n: int) -> None:
        nonlocal turn
        for _ in range(n):
            client = clients[turn % len(clients)]
            turn += 1
            if not await client.send_chat():
                client.counts["chat_skipped"] += 1

    await pace(rate, total, t0_ns, t0_ns + int((cfg.duration + 5.0) * 1e9), 64, send)
    deadline = time.monotonic() + 5.0  # the last `sent` replies
    # replies land on many clients: poll their counts until the deadline
    while any(getattr(c, "awaiting_replies", 0) for c in clients) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    for client in clients:
        client.abandon_pending()


async def storms(cfg: LoadConfig, clients: Sequence[Client], t0_ns: int, session: aiohttp.ClientSession) -> None:
    """reconnect-storm: at evenly spaced times drop the first `storm_size` clients at once —
    cut their sockets (they come back after `storm_downtime`), or have the server disconnect them
    with code 4008 (POST /api/disconnect) so they reconnect and resume by the contract."""
    size = cfg.storm_size or cfg.connections
    victims = [c for c in clients if c.i < size]
    for j in range(cfg.storms):
        await sleep_until_ns(t0_ns + int((j + 1) * cfg.duration / (cfg.storms + 1) * 1e9))
        if cfg.storm_via == "client":
            for client in victims:
                client.drop(cfg.storm_downtime)
            continue
        gate = asyncio.Semaphore(cfg.publish_concurrency)

        async def disconnect(client: Client, gate: asyncio.Semaphore = gate) -> None:
            async with gate:
                try:
                    async with session.post(
                        cfg.api_url + "/api/disconnect",
                        headers=_JSON,
                        timeout=_REQUEST_TIMEOUT,
                        data=orjson.dumps({"user": client.user, "code": 4008}),
                    ) as resp:
                        await resp.read()
                        if resp.status == 200:
                            client.counts["storm_drops"] += 1
                        else:
                            client.stats.kinds["publish_errors"][f"disconnect_http_{resp.status}"] += 1
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    client.stats.kinds["publish_errors"][f"disconnect_{type(exc).__name__}"] += 1

        await asyncio.gather(*(disconnect(c) for c in victims))
