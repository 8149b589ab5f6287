"""The WebSocket transport (`GET /ws`, subprotocol herald.json or herald.msgpack) on aiohttp.

The token goes in the `Authorization: Bearer` header. A connection that ends without a close frame
from the server (a killed node: TCP closed with no WebSocket close) is reported as 1006, never as
the 1000 aiohttp would record, so it is never taken for a final close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp

from herald.core.protocol.codec import CODECS, Codec, codec_for_subprotocol
from herald.core.protocol.errors import ProtocolError

from .config import ClientConfig, Endpoint
from .errors import ConnectionLost, PayloadTooBig
from .policy import ABNORMAL, code_for_http_status
from .transport import INVALID, Closed, Inbound, OpenFailed

__all__ = ["WsTransport"]

_CLOSE_TIMEOUT = 5.0
#: Handshake answers that mean "this path does not do WebSocket" rather than "not now" or "not you".
_NOT_AN_UPGRADE_REFUSAL = frozenset({401, 403, 413, 429})


class WsTransport:
    kind: Literal["ws", "sse"] = "ws"

    def __init__(
        self, http: aiohttp.ClientSession, endpoint: Endpoint, token: str | None, config: ClientConfig
    ) -> None:
        self.url = endpoint.ws
        self._closed: Closed | None = None
        self._http = http
        self._token = token
        self._config = config
        self._codec: Codec = CODECS[config.codec]
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._read_timeout: float | None = None

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def closed(self) -> Closed:
        """How the connection ended (1006 until a close frame said otherwise)."""
        return self._closed or Closed(ABNORMAL, "connection lost")

    def _end(self, closed: Closed) -> None:
        if self._closed is None:
            self._closed = closed

    async def open(self) -> dict[str, Any]:
        cfg = self._config
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                ws = await self._http.ws_connect(
                    self.url,
                    protocols=(self._codec.subprotocol,),
                    headers=headers,
                    autoping=True,
                    autoclose=True,
                    max_msg_size=16 << 20,
                    timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT),
                )
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
            refused = status not in _NOT_AN_UPGRADE_REFUSAL and status < 500
            raise OpenFailed(
                code_for_http_status(status),
                f"handshake answered HTTP {status}",
                status=status,
                upgrade_refused=refused,
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise OpenFailed(ABNORMAL, f"cannot connect: {exc!r}"[:200]) from exc
        self._ws = ws
        self._codec = codec_for_subprotocol(ws.protocol)
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                first = await self._next()
        except TimeoutError:
            await self.close()
            raise OpenFailed(ABNORMAL, "no `connected` frame in time") from None
        if first is None or first.frame.get("type") != "connected":
            if first is not None:  # a server that does not speak Herald
                await self.close()
                raise OpenFailed(ABNORMAL, f"first frame was not `connected`: {first.frame.get('type')!r}")
            raise OpenFailed(self.closed.code, self.closed.reason)  # refused after the upgrade (1013, 4029, 1011)
        interval = first.frame.get("ping_interval")
        if isinstance(interval, (int, float)) and interval > 0:
            self._read_timeout = 2 * interval + 5  # the server pings every interval; two missed: dead
        return first.frame

    async def _next(self) -> Inbound | None:
        """The next data frame, or None once the connection ended (then `closed` is set)."""
        ws = self._ws
        assert ws is not None
        try:
            msg = await ws.receive(timeout=self._read_timeout)
        except TimeoutError:
            self._end(Closed(ABNORMAL, "no frame or ping from the server in time"))
            await self.close()
            return None
        kind = msg.type
        if kind is aiohttp.WSMsgType.TEXT or kind is aiohttp.WSMsgType.BINARY:
            try:
                frame = self._codec.decode(msg.data)
            except ProtocolError as exc:
                return Inbound({"type": INVALID, "message": str(exc)})
            if not isinstance(frame, dict):
                return Inbound({"type": INVALID, "message": "a frame that is not an object"})
            return Inbound(frame)
        if kind is aiohttp.WSMsgType.CLOSE:
            self._end(Closed(int(msg.data), str(msg.extra or "")))
        elif kind is aiohttp.WSMsgType.ERROR:
            code = getattr(msg.data, "code", None)
            self._end(Closed(int(code) if isinstance(code, int) else ABNORMAL, repr(msg.data)[:200]))
        else:  # CLOSED / CLOSING without a close frame
            self._end(Closed(ABNORMAL, "connection lost"))
        return None

    async def frames(self) -> AsyncIterator[Inbound]:
        while (inbound := await self._next()) is not None:
            yield inbound

    async def send(self, obj: dict[str, Any]) -> None:
        data = self._codec.encode(obj)
        if len(data) > self._config.max_message_size:
            raise PayloadTooBig(
                f"{obj.get('type')} is {len(data)} bytes, over the {self._config.max_message_size} byte limit", 413
            )
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionLost("not connected", self.closed.code)
        opcode = aiohttp.WSMsgType.TEXT if self._codec.opcode == 1 else aiohttp.WSMsgType.BINARY
        try:
            await ws.send_frame(data, opcode)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionLost(f"send failed: {exc!r}"[:200], ABNORMAL) from exc

    async def close(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            self._end(Closed(1000, "closed by the client"))
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await ws.close(code=1000)
            except (TimeoutError, ConnectionError, aiohttp.ClientError):
                pass
