"""Where the client is in each channel, and the dedupe/ordering rule (DESIGN invariants 1–3), without I/O.

Every channel the client holds has a :class:`ChannelState`: its last delivered position (offset and
epoch) and whether it is *live* on the current connection. A message is delivered only when its
channel is live and its offset is above the position in the same epoch — so the same offset is
never delivered twice and never out of order, whatever the server re-sends after a reconnect.

* While a resume (`subscribe` with `since`) is in flight the channel is not live: messages that
  arrive meanwhile (the personal channel is live on the server from the moment a connection opens)
  are dropped as *early*, because the server sends everything after `since` again, in order, right
  after its `subscribed` reply. Accepting them would move the position past the missed ones.
* A resume answered `recovered:false`, an SSE `recovery` event, or a live message of another epoch
  yields a :class:`Resync` for the application: the gap is reported, never skipped silently.
* SSE has no `subscribed` reply: positions come from the messages and from the cursor in every
  event's `id` (which holds every channel's position), and the cursor sent on reconnect is built
  from these positions, so a stream resumes where the WebSocket left off and vice versa.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from herald.core.protocol.envelope import Epoch, Offset, Position
from herald.core.protocol.errors import ProtocolError
from herald.core.protocol.sse import MAX_CURSOR, channel_tag, decode_cursor, encode_cursor

from .events import Message, Resync, Subscribed, offset_order

__all__ = ["Verdict", "ChannelState", "Positions"]


class Verdict(enum.Enum):
    DELIVER = "deliver"
    DUPLICATE = "duplicate"  # at or below the channel's position: delivered before
    EARLY = "early"  # the channel is being resumed on this connection: it comes again after the reply
    UNKNOWN = "unknown"  # not a channel the client holds (e.g. just unsubscribed)


@dataclass(slots=True)
class ChannelState:
    channel: str
    position: Position | None = None
    wanted: bool = False  # the application subscribed to it
    auto: bool = False  # the server subscribed the connection to it (the personal channel)
    live: bool = False  # subscribed on the current connection: its messages are accepted
    inflight: bool = False  # a `subscribe` is in flight on the current connection
    asked: Position | None = None  # the `since` of that subscribe

    def is_ahead(self, pos: Position) -> bool:
        """Whether `pos` is past this channel's position (a new epoch always is)."""
        mine = self.position
        return mine is None or pos.epoch != mine.epoch or offset_order(pos.offset) > offset_order(mine.offset)


class Positions:
    """The channel states of one client (survives reconnects; one connection at a time)."""

    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: dict[str, ChannelState] = {}

    def __contains__(self, channel: object) -> bool:
        return channel in self._states

    def __iter__(self) -> Iterator[ChannelState]:
        return iter(list(self._states.values()))

    def get(self, channel: str) -> ChannelState | None:
        return self._states.get(channel)

    def track(
        self, channel: str, *, since: Position | None = None, wanted: bool = False, auto: bool = False
    ) -> ChannelState:
        st = self._states.get(channel)
        if st is None:
            st = self._states[channel] = ChannelState(channel, since)
        elif since is not None and st.position is None:
            st.position = since
        st.wanted |= wanted
        st.auto |= auto
        return st

    def forget(self, channel: str) -> None:
        self._states.pop(channel, None)

    def snapshot(self) -> dict[str, Position]:
        """Every known position (what a later `subscribe(..., since=)` would resume from)."""
        return {ch: st.position for ch, st in self._states.items() if st.position is not None}

    # --- WebSocket --------------------------------------------------------------------------
    def new_connection(self) -> None:
        """A new connection: nothing is live on it yet."""
        for st in self._states.values():
            st.live = st.inflight = False
            st.asked = None

    def subscribe_request(self, channel: str) -> dict[str, Any]:
        """The `subscribe` command for `channel` (with `since` when a position is known)."""
        st = self._states[channel]
        st.live, st.inflight, st.asked = False, True, st.position
        msg: dict[str, Any] = {"type": "subscribe", "channel": channel}
        if st.position is not None:
            msg["since"] = {"offset": st.position.offset, "epoch": st.position.epoch}
        return msg

    def subscribe_failed(self, channel: str) -> None:
        st = self._states.get(channel)
        if st is not None:
            st.inflight = False
            st.asked = None

    def on_subscribed(self, reply: Subscribed) -> Resync | None:
        """The `subscribed` reply: the channel is live; a resume that was not whole is a Resync."""
        st = self._states.get(reply.channel)
        if st is None or not st.inflight:
            return None
        asked = st.asked
        st.live, st.inflight, st.asked = True, False, None
        announced = Position(Offset(reply.offset), Epoch(reply.epoch))
        if asked is not None and reply.recovered:
            return None  # the missed messages follow, from `asked` on
        if asked is not None:
            st.position = announced
            return Resync(reply.channel, asked, reply.epoch, reply.offset)
        if st.is_ahead(announced):  # a fresh subscription starts at the channel's latest offset
            st.position = announced
        return None

    # --- both transports --------------------------------------------------------------------
    def accept(self, msg: Message) -> tuple[Verdict, Resync | None]:
        """Whether to deliver `msg` (advancing the position), and a Resync to deliver first."""
        st = self._states.get(msg.channel)
        if st is None:
            return Verdict.UNKNOWN, None
        pos = st.position
        if not st.live and pos is not None:
            return Verdict.EARLY, None
        resync = None
        if pos is not None:
            if msg.epoch != pos.epoch:
                resync = Resync(msg.channel, pos, msg.epoch, None, "epoch_changed")
            elif offset_order(msg.offset) <= offset_order(pos.offset):
                return Verdict.DUPLICATE, None
        st.position = msg.position
        return Verdict.DELIVER, resync

    # --- SSE --------------------------------------------------------------------------------
    def stream_opened(self, channels: Iterable[str]) -> None:
        for channel in channels:
            st = self._states.get(channel)
            if st is not None:
                st.live, st.inflight, st.asked = True, False, None

    def _decode(self, cursor: str) -> dict[str, Position]:
        """Channel → position from a server cursor; {} when it is not one we can read."""
        try:
            by_tag = decode_cursor(cursor)
        except ProtocolError:
            return {}
        return {ch: by_tag[tag] for ch in self._states if (tag := channel_tag(ch)) in by_tag}

    def apply_cursor(self, cursor: str) -> None:
        """After an SSE event: take every channel's position from its `id` where it is ahead."""
        for channel, pos in self._decode(cursor).items():
            st = self._states[channel]
            if st.is_ahead(pos):
                st.position = pos

    def recovery(self, channels: Iterable[str], cursor: str | None) -> list[Resync]:
        """SSE `recovery` event: one Resync per channel named, positions from its cursor."""
        positions = self._decode(cursor) if cursor else {}
        out = []
        for channel in channels:
            st = self._states.get(channel)
            if st is None:
                continue
            new = positions.get(channel)
            out.append(Resync(channel, st.position, new.epoch if new else None, new.offset if new else None))
            if new is not None:
                st.position = new
        return out

    def cursor(self) -> str:
        """The Last-Event-ID for a new stream: every known position, within the 1 KiB limit."""
        positions = self.snapshot()
        cursor = encode_cursor(positions)
        while len(cursor) > MAX_CURSOR and positions:
            positions.pop(next(reversed(positions)))  # newest subscriptions resume from "latest"
            cursor = encode_cursor(positions)
        return cursor
