"""Server-Sent Events framing and the resume cursor (CONTRACT.md §6), without I/O.

The event `id` is a cursor holding every channel's position: `tag.epoch.offset` entries joined by
`~`, where `tag` is a short stable hash of the channel name. Reconnecting with it as
Last-Event-ID resumes each channel of the stream (the channels themselves come from the URL).
The shared part of an event (`event:` and `data:` lines) is encoded once per publication; only
the `id:` line is per stream.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from .codec import JSON
from .envelope import Position, Publication
from .errors import ProtocolError
from .subscription import Subscription

__all__ = ["channel_tag", "encode_cursor", "decode_cursor", "event_tail", "SseStream", "MAX_CURSOR"]

MAX_CURSOR = 1024
_ENTRY_RE = re.compile(r"([a-z2-7]{8})\.([A-Za-z0-9_-]{1,64})\.([0-9]{1,19}-[0-9]{1,19})")


def channel_tag(channel: str) -> str:
    digest = hashlib.blake2b(channel.encode(), digest_size=5).digest()
    return base64.b32encode(digest).decode().lower()


def encode_cursor(positions: dict[str, Position]) -> str:
    return "~".join(f"{channel_tag(ch)}.{p.epoch}.{p.offset}" for ch, p in positions.items())


def decode_cursor(cursor: str) -> dict[str, Position]:
    """Tag → position; ProtocolError when the cursor is not one this server made."""
    if len(cursor) > MAX_CURSOR:
        raise ProtocolError("Last-Event-ID is longer than 1 KiB")
    out: dict[str, Position] = {}
    if not cursor:
        return out
    for entry in cursor.split("~"):
        m = _ENTRY_RE.fullmatch(entry)
        if m is None:
            raise ProtocolError("Last-Event-ID is not a Herald cursor")
        out[m.group(1)] = Position(m.group(3), m.group(2))  # type: ignore[arg-type]
    return out


def event_tail(event: str, data_json: bytes) -> bytes:
    """The `event:` and `data:` lines and the blank line ending an event."""
    return b"event: " + event.encode() + b"\ndata: " + data_json + b"\n\n"


def comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


class SseStream:
    """The channels of one SSE response and its cursor."""

    __slots__ = ("subs", "_parts", "_tags", "_prefix", "_prefix_for", "msgs_out")

    def __init__(self) -> None:
        self.subs: dict[str, Subscription] = {}
        self._parts: dict[str, bytes] = {}
        self._tags: dict[str, bytes] = {}  # channel -> b"<tag>." computed once
        # b"id: " + the cursor parts of every channel but `_prefix_for`: while one channel is
        # the busy one (a broadcast), each event only appends that channel's new part
        self._prefix = b""
        self._prefix_for: str | None = None
        self.msgs_out = 0

    def start(self, channel: str, since: Position | None) -> Subscription:
        sub = Subscription(channel)
        if since is not None:
            sub.last, sub.epoch = since.key, since.epoch
        sub.pending = []
        self.subs[channel] = sub
        self._tags[channel] = channel_tag(channel).encode() + b"."
        return sub

    def _advance(self, sub: Subscription, offset: str) -> None:
        if sub.channel not in self._parts or self._prefix_for != sub.channel:
            self._prefix_for = None  # another channel's part changes: the cached prefix is stale
        self._parts[sub.channel] = self._tags[sub.channel] + f"{sub.epoch}.{offset}".encode()

    def cursor(self) -> bytes:
        return b"~".join(self._parts.values())

    def complete(self, channel: str, result: Any, since: Position | None) -> tuple[list[bytes], bool]:
        """History read for `channel`: the events to send (missed, then buffered) and whether
        the stream is whole (False → the caller sends a `recovery` event)."""
        sub = self.subs[channel]
        send, _, recovered = sub.finish_recovery(result, since)
        self._advance(sub, since.offset if recovered and since is not None else result.offset)
        return [self.render(sub, pub, None) for pub in send], since is None or recovered

    def render(self, sub: Subscription, pub: Publication, tail: bytes | None) -> bytes:
        channel = sub.channel
        if self._prefix_for != channel:
            others = [part for ch, part in self._parts.items() if ch != channel]
            self._prefix = b"id: " + b"~".join(others) + b"~" if others else b"id: "
            self._prefix_for = channel
        sub.last = pub.key
        self._advance(sub, pub.offset)
        self.msgs_out += 1
        if tail is None:
            tail = event_tail(pub.event, JSON.encode(pub.envelope()))
        return b"".join((self._prefix, self._parts[channel], b"\n", tail))

    def deliver(self, pub: Publication, tail: bytes) -> bytes | None:
        """Hot path: the bytes of the event for this stream, or None (duplicate / recovering)."""
        sub = self.subs.get(pub.channel)
        if sub is None:
            return None
        last = sub.last
        if not sub.accept(pub):
            return None
        sub.last = last  # render() advances it along with the cursor
        return self.render(sub, pub, tail)
