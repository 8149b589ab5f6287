"""Where incoming events go: one queue per :class:`Subscription`, one for the client itself.

Each event is delivered to exactly one place: the Subscription of its channel when the
application holds one (created by `subscribe()`), otherwise the client's own stream
(`async for event in client`) — which also gets presence signals, connection events and errors.
Queues are unbounded: an application that stops reading them grows its memory, not the server's.
When the client ends, every queue ends too: iteration stops after the queued events, or raises
the error that ended the client.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from .events import ChannelEvent, Event, Message, Resync, Subscribed

__all__ = ["Inbox", "Subscription", "Router"]

T = TypeVar("T")


class Inbox(Generic[T]):
    """An unbounded async queue that can be ended, optionally with an error."""

    __slots__ = ("_items", "_waiters", "_ended", "_error")

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._ended = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        return self._ended

    def put(self, item: T) -> None:
        if not self._ended:
            self._items.append(item)
            self._wake()

    def end(self, error: BaseException | None = None) -> None:
        if not self._ended:
            self._ended, self._error = True, error
            self._wake()

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def get(self) -> T:
        """The next item; StopAsyncIteration (or the ending error) once ended and drained."""
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        return self._items.popleft()

    def __aiter__(self) -> Inbox[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()


class Subscription:
    """A channel the application subscribed to: `async for event in sub` yields its
    :class:`Message` events in offset order, each once, and a :class:`Resync` where a gap could
    not be filled. Iteration ends after `unsubscribe()` or `client.close()`, and raises the error
    when the client stopped on one or the server revoked the subscription."""

    __slots__ = ("channel", "subscribed", "_inbox", "_unsubscribe")

    def __init__(self, channel: str, unsubscribe: Callable[[str], Awaitable[None]]) -> None:
        self.channel = channel
        #: The latest `subscribed` reply (None over SSE, which has no such reply).
        self.subscribed: Subscribed | None = None
        self._inbox: Inbox[ChannelEvent] = Inbox()
        self._unsubscribe = unsubscribe

    def __repr__(self) -> str:
        return f"<Subscription {self.channel} pending={len(self._inbox)}{' ended' if self._inbox.ended else ''}>"

    @property
    def pending(self) -> int:
        """Events received and not read yet."""
        return len(self._inbox)

    @property
    def active(self) -> bool:
        return not self._inbox.ended

    async def next(self) -> ChannelEvent:
        """The next event; StopAsyncIteration once ended."""
        return await self._inbox.get()

    async def unsubscribe(self) -> None:
        await self._unsubscribe(self.channel)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChannelEvent:
        return await self._inbox.get()


class Router:
    """Delivers each event to its channel's Subscription, or to the client's own inbox."""

    __slots__ = ("inbox", "subscriptions")

    def __init__(self) -> None:
        self.inbox: Inbox[Event] = Inbox()
        self.subscriptions: dict[str, Subscription] = {}

    def route(self, event: Event) -> None:
        channel = getattr(event, "channel", None)
        sub = self.subscriptions.get(channel) if channel is not None else None
        if sub is not None and isinstance(event, (Message, Resync)):
            sub._inbox.put(event)
        else:
            self.inbox.put(event)

    def detach(self, channel: str, error: BaseException | None = None) -> None:
        sub = self.subscriptions.pop(channel, None)
        if sub is not None:
            sub._inbox.end(error)

    def end(self, error: BaseException | None = None) -> None:
        for channel in list(self.subscriptions):
            self.detach(channel, error)
        self.inbox.end(error)
