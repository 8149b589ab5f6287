"""`HeraldClient`: the public face of the SDK. The work is done by `connection.py`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiohttp

from herald.core.protocol.envelope import Position, validate_channel
from herald.core.protocol.errors import ProtocolError

from .auth import TokenCallback, TokenSource
from .clock import SYSTEM_CLOCK, SYSTEM_RANDOM, Clock, RandomSource
from .config import ClientConfig, Endpoint
from .connection import ClientStats, Connection, State
from .errors import BadRequest, RequestTimeout
from .events import Event, HistoryPage, Published, Refreshed, Sent, WhoResult
from .streams import Router, Subscription

__all__ = ["HeraldClient"]

T = TypeVar("T")


def _channel(name: str) -> str:
    try:
        return validate_channel(name)
    except ProtocolError as exc:
        raise BadRequest(str(exc), 400) from None


class HeraldClient:
    """A Herald client that stays connected: see the package docstring for a tour.

    `url`: one node's base URL (``http://host:8000``; ``ws://host:8000/ws`` works too) or a list
    of them, tried in turn. `token`: a JWT string, or a callable (sync or async) returning one —
    called for the first connection, before expiry, and after the server refused the token.
    `clock` and `rng` replace time and randomness (tests); `session` is an aiohttp session to
    use instead of a private one.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | TokenCallback | None = None,
        transport: Literal["auto", "ws", "sse"] | None = None,
        codec: Literal["json", "msgpack"] | None = None,
        config: ClientConfig | None = None,
        clock: Clock | None = None,
        rng: RandomSource | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        cfg = config or ClientConfig()
        if transport is not None:
            cfg = dataclasses.replace(cfg, transport=transport)
        if codec is not None:
            cfg = dataclasses.replace(cfg, codec=codec)
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise BadRequest("at least one URL is needed", 400)
        self.config = cfg
        self._router = Router()
        self._conn = Connection(
            [Endpoint.parse(u) for u in urls],
            TokenSource(token),
            cfg,
            clock or SYSTEM_CLOCK,
            rng or SYSTEM_RANDOM,
            self._router,
            session,
        )

    # --- lifecycle ------------------------------------------------------------------------------
    async def connect(self, *, wait: bool = True) -> None:
        """Start connecting (and keep reconnecting). With `wait`, return once a connection is
        open; raise the error that stopped the client, or RequestTimeout after `connect_timeout`
        (the client is then closed)."""
        self._conn.start()
        if not wait:
            return
        try:
            await _bounded(self._conn.wait_open(), self.config.connect_timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop; iterators end after the events already queued."""
        await self._conn.close()

    async def __aenter__(self) -> HeraldClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- state ----------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._conn.state

    @property
    def transport(self) -> Literal["ws", "sse"] | None:
        """The transport of the open connection (None between connections)."""
        t = self._conn.transport
        return t.kind if t is not None else None

    @property
    def user(self) -> str | None:
        return self._conn.user

    @property
    def client_id(self) -> str | None:
        return self._conn.client_id

    @property
    def node(self) -> str | None:
        """The node of the open WebSocket connection (None over SSE)."""
        return self._conn.node

    @property
    def positions(self) -> dict[str, Position]:
        """The last delivered position of every channel (persist them to resume a later client
        with `subscribe(channel, since=...)`)."""
        return self._conn.positions.snapshot()

    @property
    def stats(self) -> ClientStats:
        return self._conn.stats

    @property
    def error(self) -> Exception | None:
        """Why the client stopped, if it stopped on an error."""
        return self._conn.error

    # --- channels -------------------------------------------------------------------------------
    async def subscribe(self, channel: str, *, since: Position | None = None, queue: bool = True) -> Subscription:
        """Subscribe to `channel` and keep it subscribed across reconnects (resuming from its
        last position). `since`: resume from a position saved earlier (a Resync event follows if
        the gap cannot be filled). `queue=False`: the channel's events go to the client's own
        stream instead of the returned Subscription (which then yields nothing).

        Raises Forbidden / BadRequest from the server, RequestTimeout, ClientClosed."""
        channel = _channel(channel)
        routes = self._router.subscriptions
        existing = routes.get(channel)
        if existing is not None and queue:
            return existing
        sub = Subscription(channel, self.unsubscribe)
        if queue:
            routes[channel] = sub
        else:
            sub._inbox.end()
        try:
            sub.subscribed = await self._conn.subscribe(channel, since)
        except BaseException:
            if routes.get(channel) is sub:
                self._router.detach(channel)
            raise
        return sub

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving `channel`; its Subscription's iteration ends."""
        await self._conn.unsubscribe(_channel(channel))

    # --- requests (WebSocket only; NotSupported over SSE) ----------------------------------------
    async def publish(self, channel: str, data: Any, *, event: str | None = None) -> Published:
        """Publish `data` to `channel` (needs the token's `publish` permission)."""
        msg: dict[str, Any] = {"type": "publish", "channel": _channel(channel), "data": data}
        if event is not None:
            msg["event"] = event
        return Published.from_wire(await self._conn.request(msg))

    async def chat(self, recipient: str, text: str) -> Sent:
        """A direct message: event "chat" with data {"text": text} on `user:<recipient>`."""
        return Sent.from_wire(await self._conn.request({"type": "chat", "recipientId": recipient, "text": text}))

    async def set_status(self, status: str) -> None:
        """Set this connection's presence status (sent again after every reconnect)."""
        self._conn.status = status
        await self._conn.command({"type": "presence", "status": status})

    async def who(self, channel: str) -> WhoResult:
        """The clients present in `channel`."""
        return WhoResult.from_wire(await self._conn.request({"type": "who", "channel": _channel(channel)}))

    async def history(self, channel: str, *, since: Position | None = None, limit: int | None = None) -> HistoryPage:
        """Messages of `channel` kept by the server (after `since` when given, at most `limit`)."""
        msg: dict[str, Any] = {"type": "history", "channel": _channel(channel)}
        if since is not None:
            msg["since"] = {"offset": since.offset, "epoch": since.epoch}
        if limit is not None:
            msg["limit"] = limit
        return HistoryPage.from_wire(await self._conn.request(msg))

    async def ping(self) -> None:
        """A protocol round trip."""
        await self._conn.request({"type": "ping"})

    async def refresh(self, token: str | None = None) -> Refreshed | None:
        """Replace the token now (`token`, or a new one from the callback). On a WebSocket the
        server answers `refreshed`; on SSE the stream is reopened with it (None is returned)."""
        tokens = self._conn.tokens
        if token is None:
            token = await tokens.renew()
        tokens.current = token
        if self._conn.use_sse:
            self._conn.reopen()
            return None
        return Refreshed.from_wire(await self._conn.request({"type": "refresh", "token": token}))

    # --- the client's own event stream --------------------------------------------------------
    def __aiter__(self) -> HeraldClient:
        return self

    async def __anext__(self) -> Event:
        return await self._router.inbox.get()

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event of the client's own stream; RequestTimeout after `timeout` seconds,
        StopAsyncIteration (or the error that stopped the client) once it is closed."""
        return await _bounded(self._router.inbox.get(), timeout)

    @property
    def pending(self) -> int:
        """Events in the client's own stream not read yet."""
        return len(self._router.inbox)


async def _bounded(aw: Awaitable[T], timeout: float | None) -> T:
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError:
        raise RequestTimeout(f"nothing within {timeout}s") from None
