"""The Server-Sent Events client (CONTRACT §6): one `GET /events` stream, resumed after a drop with
`Last-Event-ID` = the last `id:` seen; an `event: recovery` with `recovered:false` is counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from .client import Client, Ended, shutdown_socket
from .sse import SseParser

__all__ = ["SseClient"]

_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=None)


class SseClient(Client):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.last_id: str | None = None
        self._resp: aiohttp.ClientResponse | None = None

    async def _session(self) -> Ended:
        params = [("channel", c) for c in self.plan.subscriptions(self.i)]
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        resumed = self.last_id is not None
        if resumed:
            headers["Last-Event-ID"] = self.last_id  # type: ignore[assignment]
        elif self.ever_ready:
            self.counts["resumed_without_position"] += 1
        url = self.cfg.targets[self.target] + "/events"
        try:
            async with self.gate:
                async with asyncio.timeout(self.cfg.connect_timeout):
                    resp = await self.session.get(url, params=params, headers=headers, timeout=_STREAM_TIMEOUT)
        except aiohttp.ClientConnectorError:
            return self._failed("refused")
        except TimeoutError:
            return self._failed("timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(type(exc).__name__)
        if resp.status != 200 or self.stopping:
            resp.close()
            if self.stopping:
                return self._ended("stopped", 1000)
            return self._failed(f"http_{resp.status}", resp.status)
        self._resp = resp
        if resumed:
            self.counts["resumed"] += 1
        self._ready()  # the server registers the channels and reads history before the headers
        try:
            kind, after_ms = await self._read(resp)
        finally:
            self._resp = None
            resp.close()
        return self._ended(kind, 1012 if kind == "reconnect" else None, after_ms)

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[str, Any]:
        parser = SseParser()
        kind, after_ms = "eof", None
        loads = orjson.loads
        try:
            async for chunk in resp.content.iter_any():
                now = time.monotonic_ns()
                for ev in parser.feed(chunk):
                    event = ev.event
                    try:
                        body = loads(ev.data)
                    except ValueError:
                        self.stats.kinds["error_replies"]["undecodable"] += 1
                        continue
                    if type(body) is not dict:
                        continue
                    if event == "reconnect":
                        kind, after_ms = "reconnect", body.get("after_ms")
                    elif event == "recovery":
                        if body.get("recovered") is False:
                            self.counts["unrecovered"] += len(body.get("channels") or (None,))
                    elif event == "error":
                        self.stats.kinds["error_replies"][str(body.get("code"))] += 1
                    elif body.get("type") == "message":
                        self._message(body, now)
                if parser.last_id is not None:
                    self.last_id = parser.last_id
        except (aiohttp.ClientError, OSError, TimeoutError):
            if kind == "eof":
                kind = "abnormal"
        return kind, after_ms

    async def _close(self) -> None:
        resp = self._resp
        if resp is not None:
            resp.close()

    def _cut(self) -> bool:
        resp = self._resp
        conn = resp.connection if resp is not None else None
        transport = conn.transport if conn is not None else None
        return transport is not None and shutdown_socket(transport.get_extra_info("socket"))
