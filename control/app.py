"""The control plane's HTTP surface (CONTRACT §8): the admin API, the ops dashboard, its token and
fallback stream, ops endpoints. `add_control_routes` also mounts it on the node app of `herald dev`.

Admin requests carry `Authorization: apikey <key>`. The dashboard page itself is public (it holds
no data); the operator types the key once, the page exchanges it for an HttpOnly, SameSite=Strict
session cookie (an HMAC of the key, so it dies with a key rotation), and the buttons use that
cookie. POSTs authorised by the cookie must also carry `X-Herald-Admin: 1`, which a cross-site form
cannot send. The page is a Herald client (client.js, served here too): `GET /dashboard/token`
gives it a short-lived token for the cluster channel and the URL to connect to (dashboard.py);
when control cannot give one, the page reads `/dashboard/events`, control's own SSE stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from herald.core.config import NodeConfig
from herald.core.engine.base import Engine
from herald.core.protocol.errors import ProtocolError, Unauthorized
from herald.core.web.http import API_KEY_HINT, apikey_matches, error_middleware, json_response, read_json
from herald.core.web.ops import add_ops_routes
from herald.node.app import client_js

from .dashboard import dashboard_feed
from .service import Control, ControlSettings

__all__ = ["build_control_app", "add_control_routes", "control_settings", "CONTROL"]

CONTROL = web.AppKey("herald_control", Control)
_STATIC = resources.files("herald.control") / "static"
_COOKIE = "herald_admin"
_MAX_STREAMS = 64
_HEARTBEAT = 15.0


class AdminAuth:
    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode()
        self.session = hmac.new(self._key, b"herald-dashboard-session", hashlib.sha256).hexdigest().encode()

    def key_ok(self, key: str) -> bool:
        return bool(self._key) and hmac.compare_digest(key.strip().encode(), self._key)

    def check(self, request: web.Request) -> None:
        if apikey_matches(request.headers.get("Authorization", ""), self._key):
            return
        cookie = request.cookies.get(_COOKIE, "")
        if (
            cookie
            and hmac.compare_digest(cookie.encode(), self.session)
            and (request.method == "GET" or request.headers.get("X-Herald-Admin") == "1")
        ):
            return
        raise Unauthorized(API_KEY_HINT)


_ADMIN = web.AppKey("herald_admin_auth", AdminAuth)
_STREAMS = web.AppKey("herald_dashboard_streams", list)


def control_settings(config: NodeConfig) -> ControlSettings:
    return ControlSettings(
        member_timeout=config.member_timeout,
        dead_retention=config.dead_retention,
        lease_seconds=config.lease_seconds,
        rebalance_ratio=config.rebalance_ratio,
        rebalance_interval=config.rebalance_interval,
        rebalance_max=config.rebalance_max,
        rebalance_min_mean=config.rebalance_min_mean,
        auto_rebalance=config.auto_rebalance,
        max_message_size=config.max_message_size,
        dashboard=dashboard_feed(config),
    )


def _control(request: web.Request) -> Control:
    request.app[_ADMIN].check(request)
    return request.app[CONTROL]


async def cluster(request: web.Request) -> web.Response:
    return json_response(_control(request).latest)


async def drain_node(request: web.Request) -> web.Response:
    control = _control(request)
    window = None
    if request.can_read_body:
        body = await read_json(request, 4096)
        if not isinstance(body, dict):
            raise ProtocolError("body must be a JSON object")
        window = body.get("window")
        if window is not None and (
            not isinstance(window, (int, float)) or isinstance(window, bool) or not 0 <= window <= 3600
        ):
            raise ProtocolError("'window' must be a number of seconds, 0-3600")
    return json_response(await control.drain_node(request.match_info["node"], window), 202)


async def rebalance(request: web.Request) -> web.Response:
    outcome, facts = await _control(request).request_rebalance()
    status = {"started": 202, "balanced": 200, "busy": 409}[outcome]
    if outcome == "busy":
        return json_response(
            {
                "error": {
                    "code": "conflict",
                    "message": "a rebalancing round is running: retry after the rebalance interval",
                },
                **facts,
            },
            status,
        )
    return json_response({"status": outcome, **facts}, status)


async def dashboard(request: web.Request) -> web.Response:
    connect = request.app[CONTROL].settings.dashboard.connect_src()
    return web.Response(
        body=(_STATIC / "dashboard.html").read_bytes(),
        content_type="text/html",
        headers={
            "Cache-Control": "no-cache",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"script-src 'self' 'unsafe-inline'; connect-src {connect}",
        },
    )


async def token(request: web.Request) -> web.Response:
    """`GET /dashboard/token` (admin): {"url", "channel", "token", "exp"}, a token that may only
    subscribe to the cluster channel; or {"url", "channel", "token": null, "reason"}."""
    response = json_response(_control(request).settings.dashboard.credentials(time.time()))
    response.headers["Cache-Control"] = "no-store"
    return response


async def session(request: web.Request) -> web.Response:
    """GET → {"signed_in": bool} (never 401, so the page can ask quietly); POST {"key": "<api key>"}
    → 204 with the session cookie; DELETE → 204, cookie removed."""
    auth = request.app[_ADMIN]
    if request.method == "GET":
        try:
            auth.check(request)
            return json_response({"signed_in": True})
        except Unauthorized:
            return json_response({"signed_in": False})
    response = web.Response(status=204)
    if request.method == "DELETE":
        response.del_cookie(_COOKIE, path="/")
        return response
    body = await read_json(request, 4096)
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not auth.key_ok(key):
        raise Unauthorized("wrong API key")
    response.set_cookie(
        _COOKIE, auth.session.decode(), httponly=True, samesite="Strict", path="/", secure=request.secure
    )
    return response


async def events(request: web.Request) -> web.StreamResponse:
    """The dashboard's fallback stream: `event: cluster` with the /admin/cluster document each tick."""
    control = _control(request)
    streams: list[int] = request.app[_STREAMS]
    if streams[0] >= _MAX_STREAMS:
        return json_response({"error": {"code": "busy", "message": "too many dashboard streams"}}, 503)
    streams[0] += 1
    try:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n\n")
        while True:
            await resp.write(b"event: cluster\ndata: " + orjson.dumps(control.latest) + b"\n\n")
            updated = control.updated
            try:
                await asyncio.wait_for(updated.wait(), _HEARTBEAT)
            except TimeoutError:
                await resp.write(b": heartbeat\n\n")
    finally:
        streams[0] -= 1


def add_control_routes(app: web.Application, control: Control, api_key: str) -> None:
    app[CONTROL] = control
    app[_ADMIN] = AdminAuth(api_key)
    app[_STREAMS] = [0]
    app.router.add_get("/admin/cluster", cluster)
    app.router.add_post("/admin/nodes/{node}/drain", drain_node)
    app.router.add_post("/admin/rebalance", rebalance)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/session", session)
    app.router.add_post("/dashboard/session", session)
    app.router.add_delete("/dashboard/session", session)
    app.router.add_get("/dashboard/events", events)
    app.router.add_get("/dashboard/token", token)


def build_control_app(config: NodeConfig, engine: Engine) -> web.Application:
    control = Control(engine, control_settings(config), config.node_id or None)
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024)
    add_control_routes(app, control, config.api_key or "")
    app.router.add_get("/client.js", client_js)  # the node's file: the dashboard imports it from here

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await engine.start()
        await control.start()
        yield
        await control.stop()
        await engine.close()

    async def readiness() -> tuple[bool, dict[str, Any]]:
        healthy = await engine.healthy()
        return healthy, {
            "status": "ready" if healthy else "engine unavailable",
            "control": control.id,
            "leader": control.is_leader,
        }

    app.cleanup_ctx.append(lifecycle)
    add_ops_routes(app, control.metrics.registry, readiness)
    return app
