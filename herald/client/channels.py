"""The channels a client holds: positions, the application's pending `subscribe()` calls, the
latest `subscribed` replies, and where their events go — without I/O.

At most one `subscribe` per channel is ever in flight on a connection (`prepare_subscribe` says
whether to send one): two fresh subscribes racing on the server could make it skip what it
buffered for the first while it read history for the second.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from herald.core.protocol.envelope import Position

from .errors import HeraldClientError, RateLimited, ServerError, Unavailable
from .events import Message, Resync, Subscribed
from .positions import Positions, Verdict
from .streams import Router

__all__ = ["Refusal", "Channels"]


class Refusal(enum.Enum):
    """What a refused subscribe means."""

    FAILED = "failed"  # the application's subscribe() gets the error
    RETRY = "retry"  # a resume hit a transient error: try again later
    LOST = "lost"  # a resume was refused for good: the subscription ends with the error


class Channels:
    __slots__ = ("positions", "router", "counters", "_waiters", "_last")

    def __init__(self, router: Router, counters: Any) -> None:
        self.positions = Positions()
        self.router = router
        self.counters = counters  # ClientStats: duplicates, early, resyncs
        self._waiters: dict[str, list[asyncio.Future[Subscribed | None]]] = {}
        self._last: dict[str, Subscribed] = {}

    # --- the application's side ---------------------------------------------------------------
    def live_reply(self, channel: str) -> tuple[bool, Subscribed | None]:
        """(True, the last reply) when `channel` is already live (now held by the application:
        e.g. the personal channel, which the server subscribes on its own)."""
        st = self.positions.get(channel)
        if st is not None and st.live:
            st.wanted = True
            return True, self._last.get(channel)
        return False, None

    def hold(self, channel: str, since: Position | None) -> asyncio.Future[Subscribed | None]:
        """Hold `channel` (from `since` if given); the future resolves when it is live."""
        self.positions.track(channel, since=since, wanted=True)
        fut: asyncio.Future[Subscribed | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(fut)
        return fut

    def abandon(self, channel: str, fut: asyncio.Future[Subscribed | None]) -> bool:
        """A subscribe() gave up (timeout, cancelled): stop holding a channel that never went
        live. True when it was dropped."""
        waiters = self._waiters.get(channel, [])
        if fut in waiters:
            waiters.remove(fut)
        st = self.positions.get(channel)
        if not waiters and st is not None and not st.live and not st.auto:
            self._waiters.pop(channel, None)
            self.positions.forget(channel)
            self.router.detach(channel)
            return True
        return False

    def release(self, channel: str) -> bool:
        """unsubscribe(): stop holding `channel`; True when the server must be told."""
        st = self.positions.get(channel)
        self.router.detach(channel)
        self._waiters.pop(channel, None)
        if st is None:
            return False
        if st.auto:  # the personal channel stays: only the application's hold on it goes
            st.wanted = False
            return False
        self.positions.forget(channel)
        self._last.pop(channel, None)
        return True

    def waiting(self, channel: str) -> bool:
        return bool(self._waiters.get(channel))

    def fail_all(self, error: BaseException) -> None:
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)
        self._waiters.clear()

    # --- the connection's side ----------------------------------------------------------------
    def to_subscribe(self) -> list[str]:
        """Channels held but neither live nor being subscribed on this connection."""
        return [st.channel for st in self.positions if (st.wanted or st.auto) and not st.live and not st.inflight]

    def prepare_subscribe(self, channel: str) -> dict[str, Any] | None:
        """The subscribe command to send now (with `since`), or None: not held, live or in flight."""
        st = self.positions.get(channel)
        if st is None or st.live or st.inflight:
            return None
        return self.positions.subscribe_request(channel)

    def subscribed(self, reply: Subscribed) -> None:
        if reply.channel not in self.positions:
            return  # given up or unsubscribed meanwhile
        resync = self.positions.on_subscribed(reply)
        if resync is not None:
            self.resync(resync)  # before the missed messages that follow the reply
        self._last[reply.channel] = reply
        sub = self.router.subscriptions.get(reply.channel)
        if sub is not None:
            sub.subscribed = reply
        self.resolve(reply.channel, reply)

    def refused(self, channel: str, exc: ServerError) -> Refusal:
        self.positions.subscribe_failed(channel)
        if self.waiting(channel):
            self.drop(channel, exc)
            return Refusal.FAILED
        if isinstance(exc, (Unavailable, RateLimited)) or exc.code >= 500:
            return Refusal.RETRY
        self.drop(channel, exc)
        return Refusal.LOST

    def resolve(self, channel: str, reply: Subscribed | None) -> None:
        for fut in self._waiters.pop(channel, ()):
            if not fut.done():
                fut.set_result(reply)

    def drop(self, channel: str, error: HeraldClientError) -> None:
        """Stop holding `channel`: its waiters and its Subscription get `error`."""
        for fut in self._waiters.pop(channel, ()):
            if not fut.done():
                fut.set_exception(error)
        st = self.positions.get(channel)
        if st is not None and not st.auto:
            self.positions.forget(channel)
        self._last.pop(channel, None)
        self.router.detach(channel, error)

    def message(self, msg: Message) -> None:
        """Deliver `msg` unless its offset was delivered before (or it comes again later)."""
        verdict, resync = self.positions.accept(msg)
        if resync is not None:
            self.resync(resync)
        if verdict is Verdict.DELIVER:
            self.router.route(msg)
        elif verdict is Verdict.DUPLICATE:
            self.counters.duplicates += 1
        elif verdict is Verdict.EARLY:
            self.counters.early += 1

    def resync(self, resync: Resync) -> None:
        self.counters.resyncs += 1
        self.router.route(resync)
