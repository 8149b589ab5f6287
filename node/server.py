"""Run an edge node: listen, serve, and on SIGTERM/SIGINT drain before stopping (in that order)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from herald.control.app import add_control_routes
from herald.control.service import Control
from herald.core.config import NodeConfig
from herald.core.engine.base import Engine
from herald.core.web.api import API
from herald.core.web.heads import HttpLimits
from herald.core.web.serve import serve_until_signal

from .app import Service, build_node_app
from .drain import start_drain
from .edge import edge_factory
from .runtime import RUNTIME

__all__ = ["serve_node"]


async def serve_node(
    config: NodeConfig,
    engine: Engine,
    on_ready: Callable[[int], None] | None = None,
    services: Sequence[Service] = (),
    control: Control | None = None,
) -> None:
    app = build_node_app(config, engine, services)
    if control is not None:  # `herald dev`: the admin API and dashboard on the node's port
        add_control_routes(app, control, config.api_key or "")
    rt = app[RUNTIME]
    # drain() turns readiness to 503 and refuses new connections at once; the listener stays open
    # for probes and the server API until every client is gone or the window ends.
    await serve_until_signal(
        app,
        config.host,
        config.port,
        component="node",
        ident=rt.node_id,
        on_ready=on_ready,
        before_cleanup=lambda: asyncio.shield(start_drain(rt)),
        edge=edge_factory(rt, app[API]),
        limits=HttpLimits.from_config(config),
    )
