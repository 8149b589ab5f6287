"""The runner: starts the workers, drives their phases, drains nodes, and merges what they measured.

Phases: connect (every worker reports `ready`) → publish from a common t0 (monotonic ns, a little
in the future so every worker starts together) → merge the publish tables and send them back →
collect the results. Every wait is bounded; a worker that fails or exits fails the run.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .accounting import Expectation, Tally
from .config import LoadConfig
from .links import Link, PipeLink, QueueLink
from .metrics import scrape_all, summarize
from .publisher import sleep_until_ns
from .stats import merge_results
from .worker import run_worker, worker_main

__all__ = ["RunError", "RunOutcome", "run_load", "ProgressFn"]

#: (phase, seconds since publishing started or None, totals summed over workers)
ProgressFn = Callable[[str, float | None, dict[str, Any]], None]

_START_DELAY_NS = 200_000_000


class RunError(Exception):
    """The run could not be carried out (a worker failed, nothing answered in time)."""


@dataclass
class RunOutcome:
    cfg: LoadConfig
    merged: dict[str, Any]
    tally: Tally
    t0_ns: int
    publish_end_ns: int
    end_ns: int
    settled: list[str]
    drains: list[dict[str, Any]] = field(default_factory=list)
    server_metrics: dict[str, Any] = field(default_factory=dict)


class _Workers:
    """The worker links, with their progress messages split off from the phase messages."""

    def __init__(self, cfg: LoadConfig, on_progress: ProgressFn | None) -> None:
        self.cfg = cfg
        self.on_progress = on_progress
        self.phase = "connecting"
        self.t0_ns: int | None = None
        self.links: list[Link] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.tasks: list[asyncio.Task[None]] = []  # in-process workers
        self.routers: list[asyncio.Task[None]] = []
        self.queues: list[asyncio.Queue[tuple[str, Any]]] = []
        self.progress: dict[int, dict[str, Any]] = {}

    def start(self) -> None:
        cfg = self.cfg
        if cfg.workers == 1:
            mine, theirs = QueueLink.pair()
            self.tasks.append(asyncio.create_task(run_worker(cfg, 0, theirs)))
            self.links.append(mine)
        else:
            ctx = multiprocessing.get_context("spawn")
            for w in range(cfg.workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=worker_main, args=(cfg, w, child), name=f"herald-loadtest-{w}", daemon=True)
                proc.start()
                child.close()
                self.procs.append(proc)
                self.links.append(PipeLink(parent))
        for w, link in enumerate(self.links):
            queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            self.queues.append(queue)
            self.routers.append(asyncio.create_task(self._route(w, link, queue)))

    async def _route(self, w: int, link: Link, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        while True:
            kind, payload = await link.recv()
            if kind == "progress":
                self.progress[w] = payload
                if self.on_progress is not None:
                    self.on_progress(self.phase, self.elapsed(), self.totals())
                continue
            queue.put_nowait((kind, payload))
            if kind == "eof":
                return

    def elapsed(self) -> float | None:
        return None if self.t0_ns is None else (time.monotonic_ns() - self.t0_ns) / 1e9

    def totals(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        p99s = []
        errors = 0
        for snap in self.progress.values():
            for k, v in snap["counts"].items():
                counts[k] = counts.get(k, 0) + v
            if snap.get("recent_p99_us") is not None:
                p99s.append(snap["recent_p99_us"])
            errors += snap.get("errors", 0)
        return {"counts": counts, "recent_p99_us": max(p99s) if p99s else None, "errors": errors}

    def send(self, kind: str, payload: Any = None) -> None:
        for link in self.links:
            link.send(kind, payload)

    async def gather(self, kind: str, timeout: float) -> list[Any]:
        async def one(w: int) -> Any:
            try:
                got, payload = await asyncio.wait_for(self.queues[w].get(), timeout)
            except TimeoutError:
                raise RunError(f"worker {w} sent no '{kind}' within {timeout:.0f} s") from None
            if got == "failed":
                raise RunError(f"worker {w} failed:\n{payload}")
            if got != kind:
                raise RunError(f"worker {w} ended unexpectedly (expected '{kind}', got '{got}')")
            return payload

        return list(await asyncio.gather(*(one(w) for w in range(len(self.links)))))

    async def close(self) -> None:
        self.send("stop")
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=10.0)
        for proc in self.procs:
            await asyncio.to_thread(proc.join, 10.0)
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 3.0)
        for task in (*self.tasks, *self.routers):
            task.cancel()
        await asyncio.gather(*self.tasks, *self.routers, return_exceptions=True)
        for link in self.links:
            link.close()


async def run_load(cfg: LoadConfig, on_progress: ProgressFn | None = None) -> RunOutcome:
    workers = _Workers(cfg, on_progress)
    before = await scrape_all(cfg.metrics_urls)
    workers.start()
    drain_task: asyncio.Task[list[dict[str, Any]]] | None = None
    try:
        await workers.gather("ready", cfg.ramp_up + 2 * cfg.connect_timeout + 60)
        t0 = time.monotonic_ns() + _START_DELAY_NS
        workers.t0_ns = t0
        workers.phase = "publishing"
        workers.send("start", t0)
        if cfg.drain_targets:
            drain_task = asyncio.create_task(rolling_drain(cfg, t0))
        tables = await workers.gather("published", cfg.duration + 60)
        publish_end = time.monotonic_ns()
        workers.phase = "settling"
        workers.send("expect", Expectation(tables).table())
        results = await workers.gather("result", cfg.grace + 60)
        end = time.monotonic_ns()
        drains = await drain_task if drain_task is not None else []
    finally:
        if drain_task is not None and not drain_task.done():
            drain_task.cancel()
        await workers.close()
    after = await scrape_all(cfg.metrics_urls)
    tally = sum((Tally(**r["tally"]) for r in results), Tally())
    return RunOutcome(
        cfg,
        merge_results(results),
        tally,
        t0,
        publish_end,
        end,
        [r["settled"] for r in results],
        drains,
        summarize(before, after),
    )


async def rolling_drain(cfg: LoadConfig, t0_ns: int) -> list[dict[str, Any]]:
    """drain: drain the targets one after the other at evenly spaced times while publishing —
    SIGTERM to the PID given for the target (`--drain-pid`, in --url order), else
    `POST <target>/admin/drain` with the API key."""
    targets = cfg.drain_targets
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"apikey {cfg.api_key}"}) as session:
        for j, target in enumerate(targets):
            await sleep_until_ns(t0_ns + int((j + 1) * cfg.duration / (len(targets) + 1) * 1e9))
            event: dict[str, Any] = {"target": target, "at_s": round((time.monotonic_ns() - t0_ns) / 1e9, 2)}
            if j < len(cfg.drain_pids):
                event.update(via="signal", pid=cfg.drain_pids[j])
                try:
                    os.kill(cfg.drain_pids[j], signal.SIGTERM)
                    event["result"] = "SIGTERM sent"
                except OSError as exc:
                    event["result"] = f"error: {exc.strerror}"
            else:
                event["via"] = "api"
                try:
                    async with session.post(target + "/admin/drain", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                        await resp.read()
                        event["result"] = f"HTTP {resp.status}"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    event["result"] = f"error: {type(exc).__name__}"
            events.append(event)
    return events
