"""The composition root of an edge node: `build_node_app(config, engine) -> web.Application`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any, Protocol

import jwt
from aiohttp import web

from herald.core.config import NodeConfig
from herald.core.engine.base import Engine
from herald.core.protocol.errors import HeraldError, ProtocolError, Unauthorized
from herald.core.web.api import API, ApiContext, add_api_routes
from herald.core.web.http import API_KEY_HINT, error_middleware, json_error, json_response
from herald.core.web.ops import add_ops_routes

from .drain import handle_order, hang_up, resync, start_drain
from .edge import handle_ws
from .runtime import RUNTIME, NodeRuntime
from .sse import handle_events

__all__ = ["build_node_app"]

_STATIC = resources.files("herald.node") / "static"


async def client_js(request: web.Request) -> web.Response:
    return web.Response(
        body=(_STATIC / "client.js").read_bytes(), content_type="text/javascript", headers={"Cache-Control": "no-cache"}
    )


async def demo_page(request: web.Request) -> web.Response:
    return web.Response(body=(_STATIC / "index.html").read_bytes(), content_type="text/html")


def demo_token(config: NodeConfig, user: str, ttl: float = 3600.0) -> str:
    """A token for the demo page (dev mode only): the lobby, news, and publishing to rooms."""
    claims = {
        "sub": user,
        "exp": int(time.time() + ttl),
        "channels": ["room:*", "news:*"],
        "publish": ["room:*"],
        "info": {"name": user},
    }
    return jwt.encode(claims, config.jwt_secret or "", algorithm="HS256")


async def demo_token_handler(request: web.Request) -> web.Response:
    config = request.app[RUNTIME].config
    user = request.query.get("user", "")
    if not (0 < len(user) <= 64) or not all(c.isalnum() or c in "_-.@" for c in user):
        return json_error(400, "bad_request", "user: 1-64 letters, digits or _-.@")
    return json_response({"token": demo_token(config, user)})


async def admin_drain(request: web.Request) -> web.Response:
    """`POST /admin/drain[?wait=1][&window=S]` (API key): start draining this node; with `wait`,
    answer when it is empty or its window ended (the Kubernetes preStop hook uses this)."""
    if not request.app[API].authorized(request):
        raise Unauthorized(API_KEY_HINT)
    rt = request.app[RUNTIME]
    window = None
    if "window" in request.query:
        try:
            window = float(request.query["window"])
        except ValueError:
            raise ProtocolError("window: seconds, a number") from None
        if not 0 <= window <= 3600:
            raise ProtocolError("window: 0-3600 seconds")
    connections = rt.connection_count
    task = start_drain(rt, window)
    if request.query.get("wait") in ("1", "true"):
        await asyncio.shield(task)
        return json_response(
            {"node": rt.node_id, "state": rt.state, "closed": task.result(), "left": rt.connection_count}
        )
    return json_response({"node": rt.node_id, "state": rt.state, "connections": connections}, 202)


class Service(Protocol):
    """Something that runs beside the node in the same process (`herald dev`: the control plane,
    and with `--redis` a router)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_node_app(config: NodeConfig, engine: Engine, services: Sequence[Service] = ()) -> web.Application:
    rt = NodeRuntime(config, engine)
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_message_size)
    app[RUNTIME] = rt
    app[API] = ApiContext(
        engine,
        config.api_key or "",
        config.max_message_size,
        on_published=rt.metrics.api_published.inc,
        describe=lambda: {"node": rt.node_id, "connections": rt.connection_count, "draining": rt.draining},
    )

    rt.hub.on_order = lambda order: handle_order(rt, order)

    def missed_deliveries() -> None:
        resync(rt)

    rt.on_missed_deliveries = missed_deliveries

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await engine.start()
        for service in services:
            await service.start()
        await engine.attach(rt.node_id, rt.hub.dispatch)
        rt.tasks.spawn(rt.ticker(), name="node.ticker")
        rt.tasks.spawn(rt.heartbeat_loop(), name="node.heartbeat")
        yield
        await hang_up(rt)  # clients that never answered the drain's close: cleaned up while the engine is up
        await rt.tasks.cancel_all()
        engine.detach(rt.node_id)
        try:  # leave the cluster: the control plane need not treat us as crashed
            await engine.forget_member(rt.member)
        except HeraldError:
            pass
        for service in reversed(services):
            await service.stop()
        await engine.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/ws", handle_ws)
    app.router.add_get("/events", handle_events)
    add_api_routes(app)
    app.router.add_post("/admin/drain", admin_drain)

    async def readiness() -> tuple[bool, dict[str, Any]]:
        if rt.draining:
            return False, {"status": "draining"}
        if not await engine.healthy():
            return False, {"status": "engine unavailable"}
        return True, {"status": "ready", "node": rt.node_id, "connections": rt.connection_count}

    add_ops_routes(app, rt.metrics.registry, readiness)
    app.router.add_get("/client.js", client_js)
    if config.dev and config.jwt_algorithm == "HS256" and config.jwt_secret:
        app.router.add_get("/", demo_page)
        app.router.add_get("/demo/token", demo_token_handler)
    return app
