"""Drain and shed: close connections spread over a window with jitter, each after a `reconnect`
advisory, so the cluster sees a steady trickle of reconnects instead of a storm (DESIGN "Control
plane").

* drain — stop accepting, close every connection within the window, finish when empty or when
  the window ends (SIGTERM, `POST /admin/drain`, or an order from the control plane);
* shed — close `count` random connections within the window (rebalancing after scale-out);
* `herald drain` — the preStop hook: ask the local node to drain and wait until it is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import structlog

from herald.core.protocol.closecodes import ADVISORY_DRAIN, ADVISORY_REBALANCE, Advisory
from herald.core.protocol.envelope import Order

from .runtime import NodeRuntime

__all__ = ["drain", "shed", "resync", "start_drain", "handle_order", "drain_command", "hang_up"]

log = structlog.get_logger("herald.node.drain")

_AFTER_MS_MAX = 1000  # advisory: reconnect after 0..1 s (plus the client's own jitter)
_SPREAD = 0.8  # closes are spread over this share of the window, so clients are gone before it ends


def _close_spread(
    conns: Sequence[object], window: float, advisory: Advisory, rng: random.Random
) -> list[asyncio.TimerHandle]:
    """Schedule `conn.close(advisory, after_ms)` for each connection, uniformly over the window."""
    spread = window * _SPREAD
    loop = asyncio.get_running_loop()
    handles = []
    for i, conn in enumerate(conns):
        delay = spread * (i + rng.random()) / len(conns) if spread > 0 else 0.0
        handles.append(loop.call_later(delay, conn.close, advisory, rng.randrange(_AFTER_MS_MAX)))  # type: ignore[attr-defined]
    return handles


async def drain(rt: NodeRuntime, window: float, rng: random.Random | None = None) -> int:
    """Close every connection within `window` seconds; returns how many were closed."""
    rng = rng or random.Random()
    rt.draining = True
    rt.metrics.draining.set(1)
    rt.metrics.drains.inc()
    conns = rt.connections()
    rng.shuffle(conns)
    started = time.monotonic()
    log.info("node.drain.started", connections=len(conns), window=window)
    handles = _close_spread(conns, window, ADVISORY_DRAIN, rng)
    deadline = started + window
    while rt.connection_count and time.monotonic() < deadline:  # noqa: ASYNC110 - closes come from many tasks
        await asyncio.sleep(0.05)
    for handle in handles:
        handle.cancel()
    for conn in rt.connections():  # window over: close the rest now
        conn.close(ADVISORY_DRAIN, 0)
    log.info(
        "node.drain.finished",
        closed=len(conns),
        duration_ms=int((time.monotonic() - started) * 1000),
        left=rt.connection_count,
    )
    return len(conns)


async def hang_up(rt: NodeRuntime, timeout: float = 2.0) -> None:
    """Shutdown: abort the WebSocket transports still open (clients that never answered their
    close frame) and wait, bounded, for their cleanup — presence, per-user counts — to finish
    while the engine is still there."""
    for conn in list(rt.ws.values()):
        conn.transport.abort()
    deadline = time.monotonic() + timeout
    while rt.ws and time.monotonic() < deadline:  # noqa: ASYNC110 - cleanups come from many tasks
        await asyncio.sleep(0.02)


def shed(rt: NodeRuntime, count: int, window: float, rng: random.Random | None = None) -> int:
    """Close `count` random connections within `window` with the `rebalance` advisory; returns
    how many were scheduled (the node keeps accepting: clients land wherever the balancer sends
    them, which after scale-out is mostly the new nodes)."""
    if rt.draining or count <= 0:
        return 0
    rng = rng or random.Random()
    conns = rt.connections()
    chosen = rng.sample(conns, min(count, len(conns)))
    _close_spread(chosen, window, ADVISORY_REBALANCE, rng)
    rt.metrics.shed.inc(len(chosen))
    log.info("node.shed", connections=len(chosen), window=window)
    return len(chosen)


def resync(rt: NodeRuntime, window: float = 5.0) -> int:
    """After deliveries may have been missed (the node was cleaned up as dead while paused), ask
    every client to reconnect and resume from its own offsets, spread over a few seconds."""
    log.warning("node.resync", connections=rt.connection_count)
    return shed(rt, rt.connection_count, window)


def drain_command(url: str, api_key: str | None, timeout: float | None) -> int:
    """`herald drain`: POST {url}/admin/drain?wait=1 and wait for the answer (the node replies
    when it is empty or its window ended). Exit 0 when drained, 1 on failure."""
    key = api_key or os.environ.get("HERALD_API_KEY", "")
    if not key:
        print("herald drain: no API key (--api-key or HERALD_API_KEY)", file=sys.stderr)
        return 2
    req = urllib.request.Request(
        url.rstrip("/") + "/admin/drain?wait=1",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"apikey {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        print(f"herald drain: {url} answered {err.code}: {err.read()[:200].decode(errors='replace')}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"herald drain: {url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body))
    return 0


def start_drain(rt: NodeRuntime, window: float | None = None) -> asyncio.Task[int]:
    """Start draining once; every later caller (SIGTERM after a preStop drain, a second order)
    gets the same task."""
    if rt.drain_task is None:
        rt.drain_task = rt.tasks.spawn(
            drain(rt, rt.config.drain_window if window is None else window), name="node.drain"
        )
    return rt.drain_task


def handle_order(rt: NodeRuntime, order: Order) -> None:
    """An order from the control plane (it arrives through the engine like a delivery)."""
    log.info("node.order", action=order.action, **{k: v for k, v in order.args.items() if k in ("count", "window")})
    if order.action == "drain":
        window = order.args.get("window")
        start_drain(rt, float(window) if isinstance(window, (int, float)) else None)
    elif order.action == "shed":
        count, window = order.args.get("count"), order.args.get("window")
        if isinstance(count, int) and isinstance(window, (int, float)):
            shed(rt, count, float(window))
    else:
        log.warning("node.order.unknown", action=order.action)
