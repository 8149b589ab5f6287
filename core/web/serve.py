"""Serve an aiohttp app until SIGTERM/SIGINT, then run an ordered shutdown (uvicorn-style)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

__all__ = ["serve_until_signal", "hand_off", "ProtocolFactory"]

ProtocolFactory = Callable[[], asyncio.Protocol]

log = structlog.get_logger("herald.serve")

CLEANUP_TIMEOUT = 5.0  # seconds the shutdown after a drain may take


def hand_off(transport: asyncio.Transport, factory: ProtocolFactory, data: bytes) -> None:
    """Give a connection whose first `data` was read by an edge protocol to `factory`'s protocol
    (aiohttp's request handler), as if it had been that protocol's from the start."""
    protocol = factory()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if data:
        protocol.data_received(data)


async def serve_until_signal(
    app: web.Application,
    host: str,
    port: int,
    *,
    component: str,
    ident: str,
    on_ready: Callable[[int], None] | None = None,
    before_cleanup: Callable[[], Awaitable[object]] | None = None,
    edge: Callable[[ProtocolFactory], ProtocolFactory] | None = None,
) -> None:
    """Listen; on the first signal run `before_cleanup` (e.g. drain) while still listening, then
    clean up; a second signal stops at once. `edge` wraps aiohttp's protocol factory: a protocol
    that sees each connection first and may hand it to aiohttp (the node's WebSocket edge)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    loop = asyncio.get_running_loop()
    factory: ProtocolFactory = runner.server  # type: ignore[assignment]
    server = await loop.create_server(edge(factory) if edge else factory, host, port, backlog=4096,
                                      reuse_address=True)
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
            log.error(f"{component}.cleanup.timeout", seconds=CLEANUP_TIMEOUT,
                      tasks=sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()))
        log.info(f"{component}.stopped")
