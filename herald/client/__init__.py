"""Herald's Python client (`herald.client`): WebSocket with SSE fallback, resume, dedupe, backoff.

Subscribe and read a channel::

    from herald.client import HeraldClient, Message, Resync

    async with HeraldClient("http://127.0.0.1:8000", token=jwt) as c:
        sub = await c.subscribe("news:x")
        async for m in sub:
            if isinstance(m, Resync):        # the gap since the last position could not be filled
                await reload_news_from_the_backend()
            else:
                print(m.offset, m.event, m.data)

Everything else the contract offers a client (WebSocket only; `NotSupported` over SSE)::

    published = await c.publish("room:1", {"text": "hi"}, event="chat")   # -> Published(channel, offset)
    await c.chat("bob", "hello")                                          # -> Sent(offset), on user:bob
    await c.set_status("away")                                            # presence, kept across reconnects
    who = await c.who("room:1")                                           # -> WhoResult(channel, clients)
    page = await c.history("room:1", limit=50)                            # -> HistoryPage(..., messages)

Errors replies raise typed exceptions carrying the contract's code: `Forbidden` (403),
`BadRequest` (400), `PayloadTooBig` (413), `RateLimited` (429), `Unavailable` (503); all are
`ServerError`, all client errors are `HeraldClientError` (itself a `HeraldError`).

Everything that is not a subscription's message comes through the client's own stream::

    async for event in c:     # Message (channels without a Subscription, e.g. user:<me>), Resync,
        ...                   # UserStatus, Join, Leave, Connected, Disconnected, ErrorEvent

What the client does for you:

* **Credentials.** `token=` is a JWT string or a callable (sync or async) returning one. The
  callable is asked again before the token expires (a `refresh` command on the WebSocket; a new
  SSE stream) and after the server refused it (HTTP 401 / close 4001); without a callable — or
  when it returns the refused token again — a refusal stops the client with `Unauthorized`.
* **Reconnect.** Exponential backoff with full jitter, 0.5 s → 20 s (`BackoffPolicy`), over the
  URLs given, in turn. Close codes follow CONTRACT §5 (`policy.CLOSE_POLICY`): 1000 and 4003 stop
  (`ClientClosed`); 1012 waits the `reconnect` advisory's `after_ms` plus jitter; 1013/4029 back off
  harder; 1001/1011/4008 and lost connections back off; 1009 is reported as `MessageTooBig`.
* **Resume, exactly once, in order.** Every channel is resubscribed with `since` its last
  offset and epoch; a message whose offset was already delivered is dropped, so the application
  sees each offset once and in order. When the server cannot fill a gap the application gets a
  `Resync` event (`recovered` False) before the messages that follow it.
* **SSE fallback.** With `transport="auto"` (the default) a WebSocket upgrade answered with plain
  HTTP (a proxy that strips it) switches the client to `GET /events` for good; `transport="sse"`
  forces it. Over SSE the client resumes with `Last-Event-ID` built from its positions.
* **Testable time.** `clock=` (monotonic, time, sleep) and `rng=` (random) are injectable.
"""

from __future__ import annotations

from herald.core.protocol.envelope import Position

from .backoff import Backoff, BackoffPolicy
from .client import HeraldClient
from .clock import Clock, RandomSource, SystemClock
from .config import ClientConfig
from .connection import ClientStats, State
from .errors import (
    BadRequest,
    ClientClosed,
    ConnectionLost,
    Forbidden,
    HeraldClientError,
    MessageTooBig,
    NotSupported,
    PayloadTooBig,
    RateLimited,
    RequestTimeout,
    ServerError,
    Unauthorized,
    Unavailable,
)
from .events import (
    ChannelEvent,
    Connected,
    Disconnected,
    ErrorEvent,
    Event,
    HistoryPage,
    Join,
    Leave,
    Message,
    PresenceInfo,
    Published,
    Refreshed,
    Resync,
    Sent,
    Subscribed,
    UserStatus,
    WhoResult,
)
from .policy import CLOSE_POLICY, Action, Reaction, reaction_for
from .streams import Subscription

__all__ = [
    "HeraldClient",
    "Subscription",
    "ClientConfig",
    "BackoffPolicy",
    "Backoff",
    "Clock",
    "RandomSource",
    "SystemClock",
    "State",
    "ClientStats",
    "Position",
    "Message",
    "Resync",
    "UserStatus",
    "Join",
    "Leave",
    "Connected",
    "Disconnected",
    "ErrorEvent",
    "Event",
    "ChannelEvent",
    "Subscribed",
    "Published",
    "Sent",
    "Refreshed",
    "HistoryPage",
    "PresenceInfo",
    "WhoResult",
    "HeraldClientError",
    "ServerError",
    "BadRequest",
    "Forbidden",
    "PayloadTooBig",
    "RateLimited",
    "Unavailable",
    "ConnectionLost",
    "ClientClosed",
    "Unauthorized",
    "MessageTooBig",
    "NotSupported",
    "RequestTimeout",
    "CLOSE_POLICY",
    "Action",
    "Reaction",
    "reaction_for",
]
