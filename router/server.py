"""Run a router until SIGTERM/SIGINT; stopping releases its partition leases at once."""

from __future__ import annotations

from herald.core.config import NodeConfig
from herald.core.engine.redis import RedisEngine
from herald.core.web.heads import HttpLimits
from herald.core.web.serve import serve_until_signal

from .app import ROUTER, build_router_app

__all__ = ["serve_router"]


async def serve_router(config: NodeConfig, engine: RedisEngine) -> None:
    app = build_router_app(config, engine)
    await serve_until_signal(
        app, config.host, config.port, component="router", ident=app[ROUTER].id, limits=HttpLimits.from_config(config)
    )
