"""The connection loop: connect, resume every channel, dispatch frames, and decide what comes next.

One task runs the loop for the client's whole life: pick the next URL, get a token, open a
transport (WebSocket, or SSE — for good once a WebSocket upgrade is refused and the transport is
"auto"), resubscribe every channel with `since` its last position, feed every frame to the
dispatcher, and when the connection ends apply the close-code policy (`policy.py`) with the
backoff (`backoff.py`). Time and randomness come from the injected clock and random source.
Requests from the application wait for an open connection (bounded by the request timeout).

Over 400 lines on purpose: it is one state machine (the loop and the dispatch it drives share the
connection's state), and the concerns that are not — close-code policy, backoff, positions,
transports, events — already live in their own modules.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from herald.core.protocol.envelope import Position

from .auth import TokenSource, jwt_claims
from .backoff import Backoff
from .channels import Channels, Refusal
from .clock import Clock, RandomSource
from .config import ClientConfig, Endpoint
from .errors import (
    ClientClosed,
    ConnectionLost,
    HeraldClientError,
    NotSupported,
    RequestTimeout,
    ServerError,
    Unauthorized,
    error_for,
)
from .events import Connected, Disconnected, ErrorEvent, Message, Subscribed, signal_from_wire
from .policy import ABNORMAL
from .reconnect import Reconnector
from .requests import Pending, RequestTable
from .sse import SseTransport
from .streams import Router
from .transport import INVALID, Closed, Inbound, OpenFailed, Transport
from .ws import WsTransport

__all__ = ["State", "ClientStats", "Connection"]

_SIGNALS = frozenset({"user_status", "join", "leave"})


class State(enum.Enum):
    IDLE = "idle"  # connect() not called yet
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"  # between connections (backoff)
    CLOSED = "closed"


@dataclass(slots=True)
class ClientStats:
    """Counters for monitoring (and tests)."""

    connections: int = 0  # transports opened
    duplicates: int = 0  # messages dropped: offset already delivered
    early: int = 0  # messages dropped: arrived before their channel's resume reply (sent again after it)
    resyncs: int = 0  # Resync events delivered
    fallbacks: int = 0  # WebSocket → SSE
    token_renewals: int = 0  # token callback calls after the first token
    #: the latest reconnect delays, in order
    delays: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=100))


@dataclass(frozen=True, slots=True)
class _Outcome:
    closed: Closed
    opened: bool
    reopen: bool = False  # reconnect at once (SSE channel set changed, fallback, new token)


class _Final(Exception):
    def __init__(self, error: HeraldClientError | None) -> None:
        super().__init__(error)
        self.error = error


class Connection:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        tokens: TokenSource,
        config: ClientConfig,
        clock: Clock,
        rng: RandomSource,
        router: Router,
        http: aiohttp.ClientSession | None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.router = router
        self.stats = ClientStats()
        self.channels = Channels(router, self.stats)
        self.positions = self.channels.positions
        self.requests = RequestTable()
        self.backoff = Backoff(config.backoff, rng)
        self._reconnector = Reconnector(self.backoff, tokens)
        self.state = State.IDLE
        self.transport: Transport | None = None
        self.use_sse = config.transport == "sse"
        self.user: str | None = None
        self.client_id: str | None = None
        self.node: str | None = None
        self.status: str | None = None  # last presence status, sent again after a reconnect
        self.error: HeraldClientError | None = None  # why the client stopped
        self._endpoints = list(endpoints)
        self._clock, self._rng = clock, rng
        self._http, self._own_http = http, http is None
        self._url_index = 0
        self._need_token = False
        self._advisory_ms: int | None = None
        self._reopen = False
        self._closing = self._finished = False
        self._change = asyncio.Event()  # replaced after every set: "the transport changed"
        self._session_tasks: set[asyncio.Task[Any]] = set()
        self._resuming: set[str] = set()  # channels (re)subscribed on this connection, no reply yet
        self._retries: dict[str, Backoff] = {}
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None and not self._finished:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            self._task = asyncio.create_task(self._run(), name="herald.client")

    async def wait_open(self) -> None:
        """Until a transport is open; the final error if the client stopped first."""
        await self._wait_transport(None)

    async def close(self) -> None:
        self._closing = True
        transport = self.transport
        if transport is not None:
            await transport.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._finish(None)
        if self._own_http and self._http is not None:
            await self._http.close()

    def _finish(self, error: HeraldClientError | None) -> None:
        if self._finished:
            return
        self._finished, self.state, self.error = True, State.CLOSED, error
        err = error or ClientClosed("the client was closed", 0)
        for pending in self.requests.drain():
            pending.fail(err)
        self.channels.fail_all(err)
        self.router.end(error)
        self._changed()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A task that lives as long as the current connection; a failure becomes an ErrorEvent."""
        task = asyncio.create_task(coro)
        self._session_tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._session_tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            error = exc if isinstance(exc, HeraldClientError) else HeraldClientError(f"{task.get_name()}: {exc!r}")
            self.notify(error)

    def notify(self, error: HeraldClientError, channel: str | None = None) -> None:
        self.router.route(ErrorEvent(error, channel))

    # --- the loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        error: HeraldClientError | None = None
        try:
            while not self._closing:
                self.state = State.CONNECTING
                outcome = await self._attempt()
                if self._closing:
                    break
                delay = await self._decide(outcome)
                self.state = State.WAITING
                if delay > 0:
                    await self._clock.sleep(delay)
        except _Final as final:
            error = final.error
        except Exception as exc:  # a bug: stop visibly instead of looping on it
            error = HeraldClientError(f"the connection loop failed: {exc!r}")
            error.__cause__ = exc
        finally:
            self._finish(error)

    async def _attempt(self) -> _Outcome:
        endpoint = self._endpoints[self._url_index % len(self._endpoints)]
        try:
            token = await (self.tokens.renew() if self._need_token else self.tokens.get())
            self._need_token = False
        except Unauthorized as exc:
            raise _Final(exc) from None
        except Exception as exc:
            self.notify(HeraldClientError(f"the token callback failed: {exc!r}"))
            return _Outcome(Closed(ABNORMAL, "token callback failed"), opened=False)
        assert self._http is not None
        transport: Transport
        if self.use_sse:
            user = self.user or jwt_claims(token or "").get("sub")  # SSE has no `connected` frame
            if isinstance(user, str):
                self.user = user
                self.positions.track(f"user:{user}", auto=True)
            transport = SseTransport(
                self._http, endpoint, token, self._sse_channels(), self.positions.cursor(), self.config
            )
        else:
            transport = WsTransport(self._http, endpoint, token, self.config)
        try:
            try:
                info = await transport.open()
            except OpenFailed as failed:
                return self._open_failed(transport, failed)
            return await self._serve(transport, info)
        finally:  # also when cancelled (close()) while opening: release the socket
            await asyncio.shield(transport.close())

    def _sse_channels(self) -> list[str]:
        return [st.channel for st in self.positions if st.wanted and not st.auto]

    def _open_failed(self, transport: Transport, failed: OpenFailed) -> _Outcome:
        closed = Closed(failed.code, failed.reason)
        if failed.upgrade_refused and transport.kind == "ws" and self.config.transport == "auto":
            self.use_sse = True
            self.stats.fallbacks += 1
            return _Outcome(closed, opened=False, reopen=True)
        if transport.kind == "sse" and failed.status in (400, 403) and failed.error is not None:
            # the stream names a channel it may not have: fail the subscribes that added one
            refused = [ch for ch in getattr(transport, "channels", ()) if self.channels.waiting(ch)]
            for channel in refused:
                self.channels.drop(channel, failed.error)
            if refused:
                return _Outcome(closed, opened=False, reopen=True)
            raise _Final(ClientClosed(f"the event stream was refused: {failed.reason}", failed.status))
        return _Outcome(closed, opened=False)

    async def _serve(self, transport: Transport, info: dict[str, Any]) -> _Outcome:
        self.positions.new_connection()
        self._advisory_ms, self._reopen = None, False
        self._resuming.clear()
        self._retries.clear()
        self.stats.connections += 1
        try:
            if transport.kind == "ws":
                await self._ws_opened(transport, info)
            else:
                self._sse_opened(transport, info)
            async for inbound in transport.frames():
                await self._dispatch(inbound)
        finally:
            self.transport = None
            for task in list(self._session_tasks):
                task.cancel()
            self._connection_lost(transport.closed.code)
            self._changed()
        closed = transport.closed
        if closed.after_ms is None and self._advisory_ms is not None:
            closed = replace(closed, after_ms=self._advisory_ms)
        return _Outcome(closed, opened=True, reopen=self._reopen)

    async def _decide(self, outcome: _Outcome) -> float:
        """The delay before the next attempt (see reconnect.py); _Final when there is none."""
        closed = outcome.closed
        if outcome.reopen:
            return 0.0
        plan = await self._reconnector.plan(closed)
        if plan.notice is not None:
            self.notify(plan.notice)
        self._need_token |= plan.need_token
        self.stats.token_renewals += plan.renewed
        if outcome.opened:
            self.router.route(Disconnected(closed.code, closed.reason, plan.delay, closed.after_ms))
        if plan.delay is None:
            raise _Final(plan.error)
        if plan.rotate:
            self._url_index += 1
        self.stats.delays.append(plan.delay)
        return plan.delay

    # --- opening ----------------------------------------------------------------------------------
    async def _ws_opened(self, transport: Transport, info: dict[str, Any]) -> None:
        self.user, self.client_id, self.node = info.get("user"), info.get("client"), info.get("node")
        for channel in info.get("channels") or ():
            self.positions.track(channel, auto=True)
        while todo := self.channels.to_subscribe():  # again: subscribe() may add one meanwhile
            for channel in todo:
                await self._send_subscribe(transport, channel)
        if self.status is not None:
            await self._send_quietly(transport, {"type": "presence", "status": self.status})
        self._opened(transport)  # from here on subscribe() sends its own
        self._spawn(self._refresh_loop(transport))

    def _sse_opened(self, transport: Transport, info: dict[str, Any]) -> None:
        assert isinstance(transport, SseTransport)
        self.client_id, self.node = info.get("client"), None
        personal = [st.channel for st in self.positions if st.auto]
        self.positions.stream_opened([*transport.channels, *personal])
        for channel in [*transport.channels, *personal]:
            self.channels.resolve(channel, None)
        self.backoff.reset()
        self._opened(transport)
        if sorted(self._sse_channels()) != sorted(transport.channels):
            self.reopen()  # the set changed while the stream was opening
        self._spawn(self._refresh_loop(transport))

    def _opened(self, transport: Transport) -> None:
        self.transport = transport
        self.state = State.CONNECTED
        self.router.route(Connected(transport.kind, transport.url, self.user, self.client_id, self.node))
        self._changed()

    def _prepare_subscribe(self, channel: str) -> Pending | None:
        """Mark `channel` in flight now (synchronously) and register the request, or None."""
        msg = self.channels.prepare_subscribe(channel)
        if msg is None:
            return None
        self._resuming.add(channel)
        return self.requests.add(msg)

    async def _send_subscribe(self, transport: Transport, channel: str, pending: Pending | None = None) -> None:
        pending = pending or self._prepare_subscribe(channel)
        if pending is None:
            return
        try:
            await transport.send(pending.msg)
        except ConnectionLost:
            self.requests.pop(pending.id)  # the connection is ending; the next one subscribes again

    async def _send_quietly(self, transport: Transport, msg: dict[str, Any]) -> None:
        try:
            await transport.send(msg)
        except ConnectionLost:
            pass

    def _connection_lost(self, code: int) -> None:
        """Requests in flight when the connection ended: subscribes are sent again on the next one."""
        for pending in self.requests.drain():
            if pending.kind == "unsubscribe":
                pending.resolve({"type": "unsubscribed", "channel": pending.msg.get("channel")})
            elif pending.kind != "subscribe":
                pending.fail(ConnectionLost(f"the connection closed ({code}) before the reply to {pending.kind}", code))

    # --- incoming -------------------------------------------------------------------------------
    async def _dispatch(self, inbound: Inbound) -> None:
        f = inbound.frame
        kind = f.get("type")
        try:
            if kind == "message":
                self.channels.message(Message.from_wire(f))
            elif kind in _SIGNALS:
                signal = signal_from_wire(f)
                if signal is not None:
                    self.router.route(signal)
            elif kind == "reconnect":
                after = f.get("after_ms")
                self._advisory_ms = int(after) if isinstance(after, (int, float)) else 0
            elif kind == "recovery":
                for resync in self.positions.recovery(f.get("channels") or (), inbound.cursor):
                    self.channels.resync(resync)
            elif (pending := self.requests.pop(f.get("id"))) is not None:
                await self._on_reply(pending, f)
            elif kind == "error":
                self.notify(error_for(int(f.get("code") or 0), str(f.get("message") or "error")))
            elif kind == INVALID:
                self.notify(HeraldClientError(f"malformed frame: {f.get('message')}"))
            # anything else ("connected", an SSE cursor-only update, later types) carries nothing to do
        except (KeyError, TypeError, ValueError) as exc:
            self.notify(HeraldClientError(f"malformed {kind!r} frame: {exc!r}"))
        if inbound.cursor:
            self.positions.apply_cursor(inbound.cursor)

    async def _on_reply(self, pending: Pending, f: dict[str, Any]) -> None:
        if f.get("type") == "error":
            exc = error_for(int(f.get("code") or 0), str(f.get("message") or "error"))
            if pending.kind == "subscribe":
                self._subscribe_refused(str(pending.msg["channel"]), exc)
            else:
                pending.fail(exc)
        elif pending.kind == "subscribe":
            self._subscribed(Subscribed.from_wire(f))
        else:
            pending.resolve(f)

    def _subscribed(self, reply: Subscribed) -> None:
        self.channels.subscribed(reply)
        self._resuming.discard(reply.channel)
        self._retries.pop(reply.channel, None)
        if not self._resuming:
            self.backoff.reset()  # the connection did real work: every channel is live

    def _subscribe_refused(self, channel: str, exc: ServerError) -> None:
        self._resuming.discard(channel)
        refusal = self.channels.refused(channel, exc)
        if refusal is Refusal.RETRY:  # a resume hit a transient error: the same resume, later
            retry = self._retries.setdefault(channel, Backoff(self.config.backoff, self._rng))
            self._spawn(self._resubscribe_later(channel, retry.next_delay()))
        elif refusal is Refusal.LOST:
            self.notify(exc, channel)

    async def _resubscribe_later(self, channel: str, delay: float) -> None:
        await self._clock.sleep(delay)
        transport = self.transport
        if transport is not None and transport.kind == "ws":
            await self._send_subscribe(transport, channel)

    # --- token refresh ----------------------------------------------------------------------------
    async def _refresh_loop(self, transport: Transport) -> None:
        """Get a new token before the current one expires: `refresh` on a WebSocket; a new
        stream (resuming from the cursor) on SSE."""
        while True:
            delay = self.tokens.refresh_delay(self._clock.time(), self.config.refresh_margin)
            if delay is None:
                return
            await self._clock.sleep(delay)
            try:
                token = await self.tokens.renew()
            except Exception as exc:
                self.notify(HeraldClientError(f"token refresh failed: {exc!r}"))
                return
            self.stats.token_renewals += 1
            if transport.kind == "sse":
                self.reopen()
                return
            try:
                await self.request({"type": "refresh", "token": token})
            except ServerError as exc:
                self.notify(exc)
                return
            except (ConnectionLost, RequestTimeout):
                return  # the next connection uses the new token

    # --- requests ---------------------------------------------------------------------------------
    async def _wait_transport(self, previous: Transport | None) -> Transport:
        while True:
            if self._finished:
                raise self.error or ClientClosed("the client is closed", 0)
            transport = self.transport
            if transport is not None and transport is not previous:
                return transport
            await self._change.wait()

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send `msg` on the WebSocket and return its reply; typed errors for error replies."""
        if self.config.transport == "sse" or (self.use_sse and self.transport is None):
            raise NotSupported(f"{msg.get('type')} needs the WebSocket transport; this client is on SSE")
        pending: Pending | None = None
        try:
            async with asyncio.timeout(self.config.request_timeout):
                previous: Transport | None = None
                while True:
                    transport = await self._wait_transport(previous)
                    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                    pending = self.requests.add(msg, fut)
                    try:
                        await transport.send(pending.msg)
                    except ConnectionLost:  # not sent: wait for the next connection
                        self.requests.pop(pending.id)
                        previous = transport
                        continue
                    return await fut
        except TimeoutError:
            raise RequestTimeout(f"no reply to {msg.get('type')} within {self.config.request_timeout}s") from None
        finally:
            if pending is not None:
                self.requests.pop(pending.id)

    async def command(self, msg: dict[str, Any]) -> None:
        """A command the server does not answer (presence): sent, then confirmed by a ping —
        the server handles a connection's frames in order, so an error reply to the command
        arrives before the pong and is raised here."""
        if self.config.transport == "sse" or (self.use_sse and self.transport is None):
            raise NotSupported(f"{msg.get('type')} needs the WebSocket transport; this client is on SSE")
        try:
            transport = await asyncio.wait_for(self._wait_transport(None), self.config.request_timeout)
        except TimeoutError:
            raise RequestTimeout(f"not connected within {self.config.request_timeout}s") from None
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending = self.requests.add(msg, fut)
        try:
            await transport.send(pending.msg)
            await self.request({"type": "ping"})
        except ConnectionLost:
            return  # the command goes out again with the next connection (presence is re-sent)
        finally:
            self.requests.pop(pending.id)
        if fut.done() and not isinstance(fut.exception(), ConnectionLost):
            fut.result()  # raises the error reply

    # --- channels -----------------------------------------------------------------------------------
    async def subscribe(self, channel: str, since: Position | None) -> Subscribed | None:
        """Hold `channel` (resumed on every reconnect) and wait until it is live."""
        if self._finished:
            raise self.error or ClientClosed("the client is closed", 0)
        live, reply = self.channels.live_reply(channel)
        if live:
            return reply
        fut = self.channels.hold(channel, since)
        transport = self.transport
        if transport is not None and transport.kind == "ws":
            pending = self._prepare_subscribe(channel)  # in flight from now: never two at once
            if pending is not None:
                self._spawn(self._send_subscribe(transport, channel, pending))
        elif transport is not None:
            self.reopen()
        try:
            async with asyncio.timeout(self.config.request_timeout):
                return await fut
        except TimeoutError:
            self._abandon(channel, fut)
            raise RequestTimeout(f"{channel}: not subscribed within {self.config.request_timeout}s") from None
        except asyncio.CancelledError:
            self._abandon(channel, fut)
            raise

    def _abandon(self, channel: str, fut: asyncio.Future[Subscribed | None]) -> None:
        """subscribe() gave up: forget the channel, and undo a subscribe the server may still answer."""
        if self.channels.abandon(channel, fut) and (transport := self.transport) is not None and transport.kind == "ws":
            self._spawn(self._send_quietly(transport, {"type": "unsubscribe", "channel": channel}))

    async def unsubscribe(self, channel: str) -> None:
        if not self.channels.release(channel):
            return
        transport = self.transport
        if transport is not None and transport.kind == "sse":
            self.reopen()
        elif transport is not None:
            try:
                await self.request({"type": "unsubscribe", "channel": channel})
            except (ConnectionLost, RequestTimeout, ClientClosed):
                pass  # the next connection does not subscribe it again

    def reopen(self) -> None:
        """SSE: open a new stream (new channel set or token) resuming from the current cursor."""
        transport = self.transport
        if transport is not None and transport.kind == "sse" and not self._reopen:
            self._reopen = True
            self._spawn(transport.close())
