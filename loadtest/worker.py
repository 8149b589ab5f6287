"""One worker: its share of the clients and of the publishing, in phases the runner drives.

1. connect its clients (spread over `ramp_up`), report `ready`;
2. on `start t0`: publish its share of the rate from t0 for `duration` (and run the storms);
3. report its publish table as `published`; receive the merged table as `expect`;
4. wait until every accounted client has everything expected (or nothing arrives for `settle`
   seconds, at most `grace`), close the clients, report `result`.

A worker runs in the runner's process (`--workers 1`) or in a spawned process (`worker_main`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from .accounting import Expectation, PublishLog, Tally
from .client import Client
from .config import LoadConfig
from .links import Link, PipeLink
from .plan import Plan
from .publisher import HttpPublisher, chat_pacer, sleep_until_ns, storms
from .sseclient import SseClient
from .stats import WorkerStats
from .wsclient import WsClient

__all__ = ["run_worker", "worker_main"]

_PROGRESS_EVERY = 0.5
_POLL = 0.02


class _Stopped(Exception):
    """The runner said stop (or went away)."""


async def _expect(link: Link, kind: str) -> Any:
    got, payload = await link.recv()
    if got != kind:
        raise _Stopped(got)
    return payload


async def run_worker(cfg: LoadConfig, worker: int, link: Link) -> None:
    try:
        await _run(cfg, worker, link)
    except _Stopped:
        pass
    except Exception:
        link.send("failed", traceback.format_exc())


def _raise_fd_limit(needed: int) -> None:
    """Each client holds a socket: raise the soft RLIMIT_NOFILE towards the hard one if needed."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft)), hard)
            )
    except (ImportError, ValueError, OSError):  # pragma: no cover - not Unix, or not allowed
        pass


async def _run(cfg: LoadConfig, worker: int, link: Link) -> None:
    plan = Plan(cfg)
    stats = WorkerStats(worker)
    publog = PublishLog()
    _raise_fd_limit(len(plan.local_clients(worker)) + cfg.publish_concurrency + 256)
    gate = asyncio.Semaphore(cfg.connect_concurrency)
    cls = WsClient if cfg.transport == "ws" else SseClient
    api_headers = {"Authorization": f"apikey {cfg.api_key}"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=cfg.publish_concurrency), headers=api_headers
        ) as api,
    ):
        clients: list[Client] = [
            cls(i, plan, stats, session, publog, gate, random.Random(f"{cfg.seed}-{i}"))
            for i in plan.local_clients(worker)
        ]
        stats.counts["clients"] = len(clients)
        runs: list[asyncio.Task[None]] = []
        reporter = asyncio.create_task(_report_progress(link, stats))
        try:
            await _connect(cfg, clients, runs)
            for client in clients:
                client.accounted = client.online
            stats.counts["ready_at_start"] = sum(c.accounted for c in clients)
            link.send("ready", {"worker": worker, "clients": len(clients), "ready": stats.counts["ready_at_start"]})
            t0 = await _expect(link, "start")
            stats.t0_ns = t0
            await sleep_until_ns(t0)
            jobs = [
                HttpPublisher(cfg, plan, worker, stats, publog).run(api, t0)
                if plan.http_publishing
                else chat_pacer(cfg, clients, t0)
            ]
            if cfg.scenario == "reconnect-storm":
                jobs.append(storms(cfg, clients, t0, api))
            await asyncio.gather(*jobs)
            link.send("published", publog.table())
            expect = Expectation([await _expect(link, "expect")])
            accounted = [c for c in clients if c.accounted]
            stats.expect = expect
            stats.remaining = sum(expect.settle(c.log).lost for c in accounted)
            settled = await _settle(cfg, accounted, stats)
            tally = sum((expect.settle(c.log) for c in accounted), Tally())
        finally:
            reporter.cancel()
            await _stop(clients, runs)
        stats.counts["never_connected"] = sum(not c.ever_ready for c in clients)
        result = stats.result()
        result["tally"] = dataclasses.asdict(tally)
        result["settled"] = settled
        link.send("result", result)


async def _connect(cfg: LoadConfig, clients: Sequence[Client], runs: list[asyncio.Task[None]]) -> None:
    """Start the clients spread over `ramp_up` and wait until each is subscribed or has given up."""
    start = time.monotonic()
    first_deadline = start + cfg.ramp_up + cfg.connect_timeout
    spacing = cfg.ramp_up / len(clients)
    for k, client in enumerate(clients):
        delay = start + k * spacing - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        runs.append(asyncio.create_task(client.run(first_deadline)))
    await asyncio.wait([c.first_ready for c in clients], timeout=cfg.ramp_up + 2 * cfg.connect_timeout + 5)


async def _settle(cfg: LoadConfig, clients: Sequence[Client], stats: WorkerStats) -> str:
    """Wait for the missing messages: until none is missing and every client is connected
    ("complete"), nothing arrived for `settle` seconds ("quiet"), or `grace` is over ("grace")."""
    start = time.monotonic()
    counts = stats.counts
    last = -1
    quiet_since = start
    while True:
        now = time.monotonic()
        if stats.remaining <= 0 and all(c.online or c.finished for c in clients):
            return "complete"
        if now - start >= cfg.grace:
            return "grace"
        seen = counts["delivered"] + counts["duplicated"]
        if seen != last:
            last, quiet_since = seen, now
        elif now - quiet_since >= cfg.settle:
            return "quiet"
        await asyncio.sleep(_POLL)


async def _stop(clients: Sequence[Client], runs: Sequence[asyncio.Task[None]]) -> None:
    await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)
    if runs:
        _, pending = await asyncio.wait(runs, timeout=5.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)


async def _report_progress(link: Link, stats: WorkerStats) -> None:
    while True:
        link.send("progress", stats.progress())
        await asyncio.sleep(_PROGRESS_EVERY)


def worker_main(cfg: LoadConfig, worker: int, conn: Connection) -> None:
    """Entry point of a worker process (multiprocessing, spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner handles Ctrl-C and tells us to stop

    async def main() -> None:
        link = PipeLink(conn)
        try:
            await run_worker(cfg, worker, link)
        finally:
            link.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is not available on Windows
        asyncio.run(main())
