"""The WebSocket client (CONTRACT §5): subscribe with `since` = the last offset and epoch seen on
each channel, count `recovered:false`, and send `chat` messages for the chat scenario."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgpack
import orjson

from .client import Client, Ended, shutdown_socket
from .marker import make_text, padding

__all__ = ["WsClient"]

_TEXT, _BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
_CLOSE_WAIT = 2.0


class WsClient(Client):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.positions: dict[str, tuple[str, str]] = {}  # channel -> (offset, epoch) last seen
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._next_id = 0
        self._subs: dict[int, tuple[str, bool]] = {}  # id -> (channel, sent with since)
        self._chats: dict[int, tuple[str, int]] = {}  # id -> (channel, seq) awaiting `sent`
        self._pad = padding(self.cfg.payload_size, self.user)
        self._msgpack = self.cfg.codec == "msgpack"

    def _url(self) -> str:
        base = self.cfg.targets[self.target]
        return "ws" + base[4:] + "/ws" if base.startswith("http") else base + "/ws"

    async def _send(self, obj: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionResetError("not connected")
        if self._msgpack:
            await ws.send_bytes(msgpack.packb(obj))
        else:
            await ws.send_str(orjson.dumps(obj).decode())

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _session(self) -> Ended:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with self.gate:
                async with asyncio.timeout(self.cfg.connect_timeout):
                    ws = await self.session.ws_connect(
                        self._url(),
                        protocols=(f"herald.{self.cfg.codec}",),
                        headers=headers,
                        autoping=True,
                        heartbeat=None,
                        max_msg_size=0,
                        compress=0,
                        timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_CLOSE_WAIT),
                    )
        except aiohttp.WSServerHandshakeError as exc:
            return self._failed(f"http_{exc.status}", exc.status)
        except aiohttp.ClientConnectorError:
            return self._failed("refused")
        except TimeoutError:
            return self._failed("timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(type(exc).__name__)
        self._ws = ws
        try:
            if self.stopping:  # stopped while connecting
                return self._ended("1000", 1000)
            return await self._receive(ws)
        finally:
            self._ws = None
            self.abandon_pending()
            if not ws.closed:
                try:
                    async with asyncio.timeout(_CLOSE_WAIT):
                        await ws.close()
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> Ended:
        self._subs.clear()
        pending = set()
        for channel in self.plan.subscriptions(self.i):
            sub: dict[str, Any] = {"type": "subscribe", "channel": channel, "id": self._id()}
            pos = self.positions.get(channel)
            if pos is not None:
                sub["since"] = {"offset": pos[0], "epoch": pos[1]}
            elif self.ever_ready:
                self.counts["resumed_without_position"] += 1
            self._subs[sub["id"]] = (channel, pos is not None)
            pending.add(sub["id"])
            try:
                await self._send(sub)
            except (ConnectionError, aiohttp.ClientError):
                return self._ended("abnormal", None)
        if not pending:
            self._ready()
        decode = msgpack.unpackb if self._msgpack else orjson.loads
        after_ms = None
        positions = self.positions
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is _TEXT or kind is _BINARY:
                try:
                    env = decode(msg.data)
                except (ValueError, msgpack.UnpackException):
                    self.stats.kinds["error_replies"]["undecodable"] += 1
                    continue
                t = env.get("type") if type(env) is dict else None
                if t == "message":
                    self._message(env, time.monotonic_ns())
                    channel = env.get("channel")
                    if channel is not None:
                        positions[channel] = (env.get("offset"), env.get("epoch"))
                elif t == "subscribed":
                    if self._subscribed(env, pending):
                        self._ready()
                elif t == "sent":
                    if self._chats.pop(env.get("id"), None) is not None:
                        self.counts["confirmed"] += 1
                elif t == "error":
                    self._error(env, pending)
                elif t == "reconnect":
                    after_ms = env.get("after_ms")
            elif kind is aiohttp.WSMsgType.CLOSE:
                code = msg.data if isinstance(msg.data, int) else ws.close_code
                return self._ended(str(code), code, after_ms)
            else:  # CLOSING, CLOSED, ERROR: the connection went away without a close frame
                code = ws.close_code
                return self._ended(
                    "abnormal" if code in (None, 1006) else str(code), code if code != 1006 else None, after_ms
                )

    def _subscribed(self, env: dict[str, Any], pending: set[int]) -> bool:
        """A `subscribed` reply; True when it was the last one awaited."""
        entry = self._subs.pop(env.get("id"), None)  # type: ignore[arg-type]
        if entry is None:
            return False
        channel, resumed = entry
        recovered = env.get("recovered") is True
        if resumed:
            self.counts["resumed"] += 1
            if not recovered:
                self.counts["unrecovered"] += 1
        if not (resumed and recovered) and isinstance(env.get("offset"), str):
            self.positions[channel] = (env["offset"], env.get("epoch"))  # type: ignore[assignment]
        pending.discard(env["id"])
        return not pending

    def _error(self, env: dict[str, Any], pending: set[int]) -> None:
        code = str(env.get("code"))
        self.stats.kinds["error_replies"][code] += 1
        ident = env.get("id")
        chat = self._chats.pop(ident, None)  # type: ignore[arg-type]
        if chat is not None:
            self.publog.unconfirmed(chat[0], self.user, chat[1])
            self.counts["unconfirmed"] += 1
            self.stats.kinds["publish_errors"][f"chat_{code}"] += 1
        elif self._subs.pop(ident, None) is not None:  # type: ignore[arg-type]
            pending.discard(ident)
            if not pending:
                self._ready()

    async def send_chat(self) -> bool:
        if not self.online or self._ws is None:
            return False
        channel = self.plan.personal(self.plan.peer(self.i))
        seq = self.publog.next_seq(channel, self.user)
        ident = self._id()
        self._chats[ident] = (channel, seq)
        self.counts["published"] += 1
        self.stats.published()
        text = make_text(self.user, seq, time.monotonic_ns(), self._pad)
        try:
            await self._send(
                {"type": "chat", "recipientId": self.plan.user(self.plan.peer(self.i)), "text": text, "id": ident}
            )
        except (ConnectionError, aiohttp.ClientError):
            pass  # stays pending: abandoned (unconfirmed) when the session ends
        return True

    def abandon_pending(self) -> None:
        for channel, seq in self._chats.values():
            self.publog.unconfirmed(channel, self.user, seq)
            self.counts["unconfirmed"] += 1
            self.stats.kinds["publish_errors"]["chat_no_reply"] += 1
        self._chats.clear()

    @property
    def awaiting_replies(self) -> int:
        return len(self._chats)

    async def _close(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                async with asyncio.timeout(_CLOSE_WAIT):
                    await ws.close()
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass

    def _cut(self) -> bool:
        ws = self._ws
        return ws is not None and shutdown_socket(ws.get_extra_info("socket"))
