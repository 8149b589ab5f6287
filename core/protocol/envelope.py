"""The envelopes of CONTRACT.md §4–5 as typed objects, with channel and offset rules.

Client commands are parsed from already-decoded objects (dicts) by :func:`parse_command`; anything
that is not a valid command raises :class:`ProtocolError` (code 400), never another exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NewType

from .errors import ProtocolError

__all__ = [
    "ChannelName",
    "ClientId",
    "NodeId",
    "Offset",
    "Epoch",
    "Position",
    "Publication",
    "Signal",
    "Subscribe",
    "Unsubscribe",
    "Publish",
    "Chat",
    "Presence",
    "Who",
    "History",
    "Refresh",
    "Ping",
    "Auth",
    "Command",
    "parse_command",
    "validate_channel",
    "validate_event",
    "namespace_of",
    "personal_channel",
    "SYSTEM_PREFIX",
    "offset_key",
    "ZERO_KEY",
    "MAX_STATUS_LEN",
]

ChannelName = NewType("ChannelName", str)
ClientId = NewType("ClientId", str)
NodeId = NewType("NodeId", str)
Offset = NewType("Offset", str)
Epoch = NewType("Epoch", str)

_CHANNEL_RE = re.compile(r"[A-Za-z0-9_\-:.@/=]{1,255}")
_OFFSET_RE = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")
ZERO_KEY: tuple[int, int] = (0, 0)
MAX_STATUS_LEN = 64
_MAX_ID = 2**53


def validate_channel(name: object) -> ChannelName:
    """Return `name` if it is a valid channel name (CONTRACT §3), else raise ProtocolError."""
    if not isinstance(name, str) or _CHANNEL_RE.fullmatch(name) is None:
        raise ProtocolError("invalid channel name: 1-255 characters of A-Z a-z 0-9 _ - : . @ / =")
    return ChannelName(name)


def namespace_of(channel: str) -> str:
    """The part before the first ':' ('' for the default namespace)."""
    ns, sep, _ = channel.partition(":")
    return ns if sep else ""


SYSTEM_PREFIX = "herald:"  # the namespace of Herald's own channels (the control plane's cluster view)


def personal_channel(user: str) -> ChannelName:
    return ChannelName(f"user:{user}")


def offset_key(offset: object) -> tuple[int, int]:
    """Parse an offset "<ms>-<seq>" into a comparable pair; ProtocolError if malformed."""
    if not isinstance(offset, str):
        raise ProtocolError("offset must be a string like '1732560000123-0'")
    m = _OFFSET_RE.fullmatch(offset)
    if m is None:
        raise ProtocolError("offset must look like '1732560000123-0'")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is in a channel: the last offset it saw and the epoch of that offset."""

    offset: Offset
    epoch: Epoch

    @property
    def key(self) -> tuple[int, int]:
        return offset_key(self.offset)


@dataclass(slots=True)
class Publication:
    """One message of a channel's history: what the engine stores and delivers in offset order."""

    channel: ChannelName
    offset: Offset
    epoch: Epoch
    data: Any
    event: str = "message"
    sender: str | None = None
    ts: int = 0
    key: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = offset_key(self.offset)

    def envelope(self) -> dict[str, Any]:
        """The server → client message envelope of CONTRACT §4."""
        env: dict[str, Any] = {
            "type": "message",
            "channel": self.channel,
            "offset": self.offset,
            "epoch": self.epoch,
            "event": self.event,
        }
        if self.sender is not None:
            env["from"] = self.sender
        env["data"] = self.data
        env["ts"] = self.ts
        return env


@dataclass(frozen=True, slots=True)
class Signal:
    """An ephemeral frame for a channel's subscribers (user_status, join, leave): no offset, no history."""

    channel: ChannelName
    frame: dict[str, Any]


# --- client → server commands -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: int | None
    channel: ChannelName
    since: Position | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: int | None
    channel: ChannelName


@dataclass(frozen=True, slots=True)
class Publish:
    id: int | None
    channel: ChannelName
    data: Any
    event: str = "message"


@dataclass(frozen=True, slots=True)
class Chat:
    id: int | None
    recipient: str
    text: str


@dataclass(frozen=True, slots=True)
class Presence:
    id: int | None
    status: str


@dataclass(frozen=True, slots=True)
class Who:
    id: int | None
    channel: ChannelName


@dataclass(frozen=True, slots=True)
class History:
    id: int | None
    channel: ChannelName
    since: Position | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Refresh:
    id: int | None
    token: str


@dataclass(frozen=True, slots=True)
class Ping:
    id: int | None


@dataclass(frozen=True, slots=True)
class Auth:
    id: int | None
    token: str


Command = Subscribe | Unsubscribe | Publish | Chat | Presence | Who | History | Refresh | Ping | Auth


def _str(obj: dict[str, Any], key: str, *, max_len: int = 4096) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError(f"'{key}' must be a non-empty string")
    if len(value) > max_len:
        raise ProtocolError(f"'{key}' is longer than {max_len} characters")
    return value


def _since(obj: dict[str, Any]) -> Position | None:
    since = obj.get("since")
    if since is None:
        return None
    if not isinstance(since, dict):
        raise ProtocolError("'since' must be an object {offset, epoch}")
    offset, epoch = since.get("offset"), since.get("epoch")
    offset_key(offset)
    if not isinstance(epoch, str) or not 0 < len(epoch) <= 64:
        raise ProtocolError("'since.epoch' must be a non-empty string")
    return Position(Offset(offset), Epoch(epoch))  # type: ignore[arg-type]


def validate_event(obj: dict[str, Any]) -> str:
    """The `event` of a publish request (default "message"); it becomes an SSE `event:` line."""
    event = obj.get("event", "message")
    if not isinstance(event, str) or not 0 < len(event) <= 64 or not event.isprintable():
        raise ProtocolError("'event' must be a printable string of 1-64 characters")
    return event


def parse_command(obj: Any) -> Command:
    """Turn a decoded client message into a typed command, or raise ProtocolError."""
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be an object with a 'type'")
    raw_id = obj.get("id")
    if raw_id is not None and (type(raw_id) is not int or not 0 <= raw_id < _MAX_ID):
        raise ProtocolError("'id' must be a non-negative integer")
    cid: int | None = raw_id
    kind = obj.get("type")
    if kind == "subscribe":
        return Subscribe(cid, validate_channel(obj.get("channel")), _since(obj))
    if kind == "unsubscribe":
        return Unsubscribe(cid, validate_channel(obj.get("channel")))
    if kind == "publish":
        if "data" not in obj:
            raise ProtocolError("'data' is required")
        return Publish(cid, validate_channel(obj.get("channel")), obj["data"], validate_event(obj))
    if kind == "chat":
        recipient = _str(obj, "recipientId", max_len=200)
        validate_channel(f"user:{recipient}")
        text = obj.get("text")
        if not isinstance(text, str):
            raise ProtocolError("'text' must be a string")
        return Chat(cid, recipient, text)
    if kind == "presence":
        return Presence(cid, _str(obj, "status", max_len=MAX_STATUS_LEN))
    if kind == "who":
        return Who(cid, validate_channel(obj.get("channel")))
    if kind == "history":
        limit = obj.get("limit")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ProtocolError("'limit' must be a non-negative integer")
        return History(cid, validate_channel(obj.get("channel")), _since(obj), limit)
    if kind == "refresh":
        return Refresh(cid, _str(obj, "token", max_len=8192))
    if kind == "ping":
        return Ping(cid)
    if kind == "auth":
        return Auth(cid, _str(obj, "token", max_len=8192))
    raise ProtocolError(
        f"unknown message type {kind!r}" if isinstance(kind, str) and len(kind) < 40 else "unknown message type"
    )


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Internal: close every connection of `user` on every node with `code` (server API)."""

    user: str
    code: int


@dataclass(frozen=True, slots=True)
class Order:
    """Internal: an instruction from the control plane to one node (`drain`, `shed`)."""

    action: str
    args: dict[str, Any]


#: What an engine hands to a node for delivery, in order.
Delivery = Publication | Signal | Disconnect | Order
__all__ += ["Disconnect", "Order", "Delivery"]
