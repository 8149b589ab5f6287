"""Graceful stop: SIGTERM → readiness 503 at once, `reconnect` advisory, 1012 spread over the
drain window, exit when empty."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request

import websockets

from tests.conftest import make_token, seconds
from tests.e2e.clients import SseClient
from tests.e2e.server import start_herald

N_WS = 30


def readyz(base: str) -> int:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


async def test_sigterm_drains_clients_with_advisory_and_1012_spread_over_the_window() -> None:
    """Every WS client gets {"type":"reconnect","reason":"drain"} then close 1012; SSE gets
    `event: reconnect`; closes are spread out, not a burst; the process then exits 0."""
    window = 2.0
    server = start_herald("--drain-window", str(window))
    try:
        conns = [await websockets.connect(f"{server.ws}?token={make_token(f'u{i}')}") for i in range(N_WS)]
        for c in conns:
            assert json.loads(await c.recv())["type"] == "connected"
        sse = await SseClient.open(server.http, f"/events?token={make_token('sse-user')}")
        assert sse.status == 200

        closed_at: list[float] = []
        advisories: list[dict] = []

        async def watch(conn) -> int:
            try:
                async for raw in conn:
                    frame = json.loads(raw)
                    if frame["type"] == "reconnect":
                        advisories.append(frame)
            except websockets.ConnectionClosed:
                pass
            closed_at.append(time.monotonic())
            return conn.close_code

        watchers = [asyncio.ensure_future(watch(c)) for c in conns]
        started = time.monotonic()
        server.terminate(signal.SIGTERM)
        async with asyncio.timeout(seconds(5)):
            while await asyncio.to_thread(readyz, server.http) != 503:
                await asyncio.sleep(0.01)
        assert len(closed_at) < N_WS  # readiness flipped before the drain finished

        # new connections are refused while draining
        try:
            await websockets.connect(f"{server.ws}?token={make_token('late')}")
            raise AssertionError("a draining node accepted a connection")
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 503

        ev = await sse.event(timeout=window + 5)
        assert ev["event"] == "reconnect" and ev["data"]["reason"] == "drain"
        sse.close()

        async with asyncio.timeout(seconds(window + 5)):
            codes = await asyncio.gather(*watchers)
        assert codes == [1012] * N_WS
        assert len(advisories) == N_WS and all(a["reason"] == "drain" and a["after_ms"] >= 0 for a in advisories)
        spread = max(closed_at) - min(closed_at)
        assert spread > window * 0.3, f"closes came in a burst ({spread:.2f}s)"
        assert max(closed_at) - started < window + 1.0
        assert await asyncio.to_thread(server.wait, window + 5) == 0
    finally:
        server.stop()
