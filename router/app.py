"""The composition root of a router: `build_router_app(config, engine) -> web.Application`.

Serves the server API (CONTRACT §7) and ops endpoints; runs the Router beside them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from herald.core.config import NodeConfig
from herald.core.engine.redis import RedisEngine
from herald.core.web.api import API, ApiContext, add_api_routes
from herald.core.web.http import error_middleware
from herald.core.web.ops import add_ops_routes

from .service import Router

__all__ = ["build_router_app", "ROUTER"]

ROUTER = web.AppKey("herald_router", Router)


def build_router_app(config: NodeConfig, engine: RedisEngine) -> web.Application:
    router = Router(engine.log, engine, config.node_id or None, lease_seconds=config.lease_seconds)
    api_published = router.metrics.published.labels("api")
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_message_size)
    app[ROUTER] = router
    app[API] = ApiContext(
        engine,
        config.api_key or "",
        config.max_message_size,
        on_published=lambda n: api_published.inc(n),
        describe=lambda: {"router": router.id, "owned_partitions": len(router.owned())},
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await engine.start()
        await router.start()
        yield
        await router.stop()
        await engine.close()

    async def readiness() -> tuple[bool, dict[str, Any]]:
        healthy = await engine.healthy()
        return healthy, {
            "status": "ready" if healthy else "engine unavailable",
            "router": router.id,
            "partitions": router.owned(),
        }

    app.cleanup_ctx.append(lifecycle)
    add_api_routes(app)
    add_ops_routes(app, router.metrics.registry, readiness)
    return app
