"""Run an edge node: listen, serve, and on SIGTERM/SIGINT drain before stopping (in that order)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import structlog
from aiohttp import web

from herald.core.config import NodeConfig
from herald.core.engine.base import Engine

from .app import build_node_app
from .drain import drain
from .runtime import RUNTIME

__all__ = ["serve_node"]

log = structlog.get_logger("herald.node")


async def serve_node(config: NodeConfig, engine: Engine, on_ready: Callable[[web.Application, int], None] | None = None) -> None:
    app = build_node_app(config, engine)
    rt = app[RUNTIME]
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.port
    structlog.contextvars.bind_contextvars(component="node", node=rt.node_id)
    log.info("node.started", host=config.host, port=port, engine=type(engine).__name__)
    if on_ready is not None:
        on_ready(app, port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        for sig in signals:  # a second signal stops at once
            loop.add_signal_handler(sig, lambda: asyncio.get_running_loop().stop())
        log.info("node.stopping", connections=rt.connection_count)
        # drain() turns readiness to 503 and refuses new connections at once; the listener stays
        # open for probes and the server API until every client is gone or the window ends.
        await drain(rt, config.drain_window)
    finally:
        await runner.cleanup()
        log.info("node.stopped")
