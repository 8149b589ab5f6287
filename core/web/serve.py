"""Serve an aiohttp app until SIGTERM/SIGINT, then run an ordered shutdown (uvicorn-style)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from .handler import handler_factory
from .heads import HeadGate, HttpLimits, ProtocolFactory, guard_factory, hand_off

__all__ = ["serve_until_signal", "hand_off", "ProtocolFactory", "Edge"]

#: Wraps aiohttp's protocol factory with a protocol that sees each connection first.
Edge = Callable[[ProtocolFactory, HeadGate], ProtocolFactory]

log = structlog.get_logger("herald.serve")

CLEANUP_TIMEOUT = 5.0  # seconds the shutdown after a drain may take


async def serve_until_signal(
    app: web.Application,
    host: str,
    port: int,
    *,
    component: str,
    ident: str,
    on_ready: Callable[[int], None] | None = None,
    before_cleanup: Callable[[], Awaitable[object]] | None = None,
    edge: Edge | None = None,
    limits: HttpLimits | None = None,
) -> None:
    """Listen; on the first signal run `before_cleanup` (e.g. drain) while still listening, then
    clean up; a second signal stops at once. Every connection first meets a head guard
    (core/web/heads.py: `limits`' deadline and cap), by default a plain HeadGuard, or `edge`'s
    protocol (the node's WebSocket edge), which hands what it does not serve to aiohttp."""
    limits = limits or HttpLimits()
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=1.0,
        keepalive_timeout=limits.keepalive_timeout,
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    gate = HeadGate(limits)
    assert runner.server is not None
    factory = handler_factory(runner.server, gate)
    outer = edge(factory, gate) if edge else guard_factory(gate)(factory)
    server = await loop.create_server(outer, host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    structlog.contextvars.bind_contextvars(component=component, **{component: ident})
    log.info(f"{component}.started", host=host, port=bound)
    if on_ready is not None:
        on_ready(bound)
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        for sig in signals:
            loop.add_signal_handler(sig, loop.stop)
        log.info(f"{component}.stopping")
        if before_cleanup is not None:
            await before_cleanup()
    finally:
        server.close()
        # Bounded: a stuck cleanup (an unreachable Redis, a task that ignores cancellation) must not
        # keep a drained process alive until the orchestrator kills it.
        try:
            await asyncio.wait_for(runner.cleanup(), CLEANUP_TIMEOUT)
        except TimeoutError:
            log.error(
                f"{component}.cleanup.timeout",
                seconds=CLEANUP_TIMEOUT,
                tasks=sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()),
            )
        log.info(f"{component}.stopped")
