"""Ops endpoints every component serves: /healthz, /readyz, /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from .http import json_response

__all__ = ["add_ops_routes"]


def add_ops_routes(
    app: web.Application, registry: CollectorRegistry, readiness: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
) -> None:
    """`readiness()` returns (ready, facts); /readyz answers 200 or 503 with the facts."""

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready, facts = await readiness()
        return json_response(facts, 200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
