"""Typed forms of what the server sends (CONTRACT §4–6): events for the application, request replies.

Events reach the application through `async for` (see `streams.py`): :class:`Message`,
:class:`Resync` (the gap since the client's position could not be filled: `recovered` is False),
the presence signals :class:`UserStatus`, :class:`Join`, :class:`Leave`, and the connection's own
:class:`Connected`, :class:`Disconnected` and :class:`ErrorEvent`. Replies are returned by the
client's request methods. `from_wire` raises KeyError/TypeError/ValueError on a malformed frame;
the caller turns that into an :class:`ErrorEvent`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from herald.core.protocol.envelope import Epoch, Offset, Position

from .errors import HeraldClientError

__all__ = [
    "Position",
    "offset_order",
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
    "signal_from_wire",
]

_OFFSET_RE = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")


def offset_order(offset: str) -> tuple[int, int, str]:
    """A sort key for offsets of one channel and epoch: "<ms>-<seq>" compared as integers; any
    other (opaque) form falls back to string order."""
    m = _OFFSET_RE.fullmatch(offset)
    if m is None:
        return (-1, -1, offset)
    return (int(m.group(1)), int(m.group(2)), "")


@dataclass(frozen=True, slots=True)
class Message:
    """A channel message (the §4 envelope). `sender` is the envelope's `from`."""

    channel: str
    offset: str
    epoch: str
    data: Any
    event: str = "message"
    sender: str | None = None
    ts: int = 0

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> Message:
        channel, offset, epoch = f["channel"], f["offset"], f["epoch"]
        if not (isinstance(channel, str) and isinstance(offset, str) and isinstance(epoch, str)):
            raise TypeError("message channel, offset and epoch must be strings")
        return cls(
            channel, offset, epoch, f.get("data"), f.get("event") or "message", f.get("from"), int(f.get("ts") or 0)
        )

    @property
    def position(self) -> Position:
        return Position(Offset(self.offset), Epoch(self.epoch))


@dataclass(frozen=True, slots=True)
class Resync:
    """The client could not get every message of `channel` since `previous`: resync the channel's
    state from the application's own source. Delivery goes on after `offset` of `epoch`.

    `reason` is "not_recovered" (a resume was answered `recovered:false`, or SSE's `recovery`
    event) or "epoch_changed" (a live message came with a new epoch: the history was lost; then
    `offset` is None and delivery goes on with that message)."""

    channel: str
    previous: Position | None
    epoch: str | None
    offset: str | None
    reason: Literal["not_recovered", "epoch_changed"] = "not_recovered"
    recovered: Literal[False] = False


@dataclass(frozen=True, slots=True)
class UserStatus:
    """A user set their presence status; `channel` is where the signal came through."""

    user: str
    status: str
    channel: str | None


@dataclass(frozen=True, slots=True)
class Join:
    channel: str
    client: str
    user: str
    status: str | None = None
    info: Any = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    channel: str
    client: str
    user: str


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is up (and, for SSE, its stream open). `node` is None over SSE."""

    transport: Literal["ws", "sse"]
    url: str
    user: str | None
    client: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection ended. `reconnect_in` is the delay before the next attempt, None when final;
    `advised_ms` the `after_ms` of a `reconnect` advisory the server sent before closing."""

    code: int
    reason: str
    reconnect_in: float | None
    advised_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """An error no request was waiting for: an `error` frame without an id, an SSE `error`
    event, a failed token refresh, a 1009 close, a malformed frame, a lost subscription."""

    error: HeraldClientError
    channel: str | None = None

    @property
    def code(self) -> int:
        return self.error.code


#: What a subscription's iterator yields.
ChannelEvent = Message | Resync
#: What the client's own iterator yields.
Event = Message | Resync | UserStatus | Join | Leave | Connected | Disconnected | ErrorEvent


def signal_from_wire(f: dict[str, Any]) -> UserStatus | Join | Leave | None:
    kind = f.get("type")
    if kind == "user_status":
        return UserStatus(str(f["userId"]), str(f["status"]), f.get("channel"))
    if kind == "join":
        return Join(f["channel"], f["client"], f["user"], f.get("status"), f.get("info"), f.get("node"))
    if kind == "leave":
        return Leave(f["channel"], f["client"], f["user"])
    return None


# --- replies -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The `subscribed` reply: the channel's epoch and latest offset, whether a resume was whole."""

    channel: str
    epoch: str
    offset: str
    recovered: bool
    missed: int

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> Subscribed:
        return cls(f["channel"], f["epoch"], f["offset"], bool(f.get("recovered")), int(f.get("missed") or 0))


@dataclass(frozen=True, slots=True)
class Published:
    channel: str
    offset: str

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> Published:
        return cls(f["channel"], f["offset"])


@dataclass(frozen=True, slots=True)
class Sent:
    """The reply to `chat`: the offset of the message on the recipient's personal channel."""

    offset: str

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> Sent:
        return cls(f["offset"])


@dataclass(frozen=True, slots=True)
class Refreshed:
    exp: int

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> Refreshed:
        return cls(int(f["exp"]))


@dataclass(frozen=True, slots=True)
class HistoryPage:
    channel: str
    epoch: str
    offset: str
    recovered: bool
    messages: tuple[Message, ...]

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> HistoryPage:
        return cls(
            f["channel"],
            f["epoch"],
            f["offset"],
            bool(f.get("recovered", True)),
            tuple(Message.from_wire(m) for m in f.get("messages") or ()),
        )


@dataclass(frozen=True, slots=True)
class PresenceInfo:
    client: str
    user: str
    status: str | None
    info: Any
    node: str | None

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> PresenceInfo:
        return cls(f["client"], f["user"], f.get("status"), f.get("info"), f.get("node"))


@dataclass(frozen=True, slots=True)
class WhoResult:
    channel: str
    clients: tuple[PresenceInfo, ...]

    @classmethod
    def from_wire(cls, f: dict[str, Any]) -> WhoResult:
        return cls(f["channel"], tuple(PresenceInfo.from_wire(c) for c in f.get("clients") or ()))

    @property
    def users(self) -> frozenset[str]:
        return frozenset(c.user for c in self.clients)
