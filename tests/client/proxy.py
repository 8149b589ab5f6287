"""A tiny reverse proxy that does not do WebSocket: it forwards every request as plain HTTP,
dropping the hop-by-hop `Upgrade`/`Connection` headers (as some corporate proxies do), and
streams responses back — so `GET /ws` reaches Herald without an upgrade and `GET /events` works."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

_HOP = {
    "connection",
    "upgrade",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "proxy-connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "host",
    "content-length",
}


@contextlib.asynccontextmanager
async def stripping_proxy(upstream: str) -> AsyncIterator[str]:
    """Serve the proxy on an ephemeral port; yields its base URL."""
    session = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
    seen: list[str] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read() if request.can_read_body else None
        async with session.request(request.method, upstream + request.path_qs, headers=headers, data=body) as up:
            resp = web.StreamResponse(
                status=up.status,
                reason=up.reason,
                headers={
                    k: v for k, v in up.headers.items() if k.lower() not in _HOP and k.lower() != "content-encoding"
                },
            )
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except (ConnectionError, aiohttp.ClientError):
                pass  # either side went away
            return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()
