"""Drain: stop accepting, advise every client to reconnect elsewhere, close them spread over the
window with jitter, and finish when empty or when the window ends (DESIGN "Control plane")."""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from herald.core.protocol.closecodes import ADVISORY_DRAIN

from .runtime import NodeRuntime

__all__ = ["drain"]

log = structlog.get_logger("herald.node.drain")

_AFTER_MS_MAX = 1000  # advisory: reconnect after 0..1 s (plus the client's own jitter)


async def drain(rt: NodeRuntime, window: float, rng: random.Random | None = None) -> int:
    """Close every connection within `window` seconds; returns how many were closed."""
    rng = rng or random.Random()
    rt.draining = True
    rt.metrics.draining.set(1)
    rt.metrics.drains.inc()
    conns = [*rt.ws.values(), *rt.sse.values()]
    rng.shuffle(conns)
    started = time.monotonic()
    log.info("node.drain.started", connections=len(conns), window=window)
    # Spread closes uniformly over 80 % of the window so clients are gone before it ends.
    spread = window * 0.8
    loop = asyncio.get_running_loop()
    handles = []
    for i, conn in enumerate(conns):
        delay = spread * (i + rng.random()) / len(conns) if spread > 0 else 0.0
        after_ms = rng.randrange(_AFTER_MS_MAX)
        handles.append(loop.call_later(delay, conn.close, ADVISORY_DRAIN, after_ms))
    deadline = started + window
    while rt.connection_count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for handle in handles:
        handle.cancel()
    for conn in [*rt.ws.values(), *rt.sse.values()]:  # window over: close the rest now
        conn.close(ADVISORY_DRAIN, 0)
    log.info("node.drain.finished", closed=len(conns), duration_ms=int((time.monotonic() - started) * 1000),
             left=rt.connection_count)
    return len(conns)
