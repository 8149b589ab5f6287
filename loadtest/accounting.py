"""Loss, duplicate and order accounting, without I/O.

Publishers number their messages per stream — a (channel, publisher) pair — from 0, and note the
ones they could not confirm (an error or no answer: maybe published, maybe not). A receiver keeps
a bitmap of the sequence numbers it saw per stream, and checks the server's offsets per channel.
When publishing is over, the publishers' tables are merged into an :class:`Expectation` and each
receiver is settled against it; for every stream of a channel the receiver was subscribed to:

    expected = n - |unconfirmed|
    lost     = expected - |seen ∩ confirmed|
    extra    = seen messages that were not confirmed (unconfirmed ones that got through anyway)

A duplicate is a (stream, seq) seen twice by one receiver. Out of order is a new message whose
offset is not after the highest offset this receiver already saw on the channel (same epoch):
the server promises delivery in offset order. Publisher order is not used for this, because
concurrent publish requests may reach the server in any order.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Expectation", "PublishLog", "ReceiverLog", "StreamLog", "Table", "Tally", "Verdict", "offset_key"]

#: channel -> publisher -> (messages numbered 0..n-1, the unconfirmed sequence numbers)
Table = dict[str, dict[str, tuple[int, list[int]]]]


class Verdict(enum.IntEnum):
    NEW = 0
    DUPLICATE = 1
    OUT_OF_ORDER = 2  # new, but behind an offset this receiver already saw


def offset_key(offset: object) -> tuple[int, int] | None:
    """Herald offsets look like "<ms>-<seq>"; anything else is not compared (None)."""
    if type(offset) is not str:
        return None
    ms, sep, seq = offset.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


class StreamLog:
    """The sequence numbers one receiver saw on one stream, as a bitmap."""

    __slots__ = ("bits", "seen")

    def __init__(self) -> None:
        self.bits = bytearray()
        self.seen = 0

    def add(self, seq: int) -> bool:
        """Record `seq`; False when it was already seen (a duplicate)."""
        i, bit = seq >> 3, 1 << (seq & 7)
        bits = self.bits
        if i >= len(bits):
            bits.extend(bytes(max(i + 1 - len(bits), len(bits), 16)))
        if bits[i] & bit:
            return False
        bits[i] |= bit
        self.seen += 1
        return True

    def __contains__(self, seq: int) -> bool:
        i = seq >> 3
        return i < len(self.bits) and bool(self.bits[i] & (1 << (seq & 7)))

    def count_below(self, n: int) -> int:
        """How many of 0..n-1 were seen."""
        whole, rest = divmod(n, 8)
        count = int.from_bytes(self.bits[:whole], "little").bit_count()
        if rest and whole < len(self.bits):
            count += (self.bits[whole] & ((1 << rest) - 1)).bit_count()
        return count


class ReceiverLog:
    """Everything one receiver saw: per-stream bitmaps and the highest offset per channel."""

    __slots__ = ("channels", "streams", "_order", "new", "duplicated", "out_of_order")

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels = frozenset(channels)  # what it is subscribed to: what it should receive
        self.streams: dict[tuple[str, str], StreamLog] = {}
        self._order: dict[str, tuple[str, tuple[int, int]]] = {}  # channel -> (epoch, highest offset)
        self.new = 0
        self.duplicated = 0
        self.out_of_order = 0

    def record(self, channel: str, pub: str, seq: int, offset: object, epoch: object) -> Verdict:
        key = (channel, pub)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = StreamLog()
        if not stream.add(seq):
            self.duplicated += 1
            return Verdict.DUPLICATE
        self.new += 1
        k = offset_key(offset)
        if k is not None:
            last = self._order.get(channel)
            if last is not None and last[0] == epoch and k <= last[1]:
                self.out_of_order += 1
                return Verdict.OUT_OF_ORDER
            self._order[channel] = (str(epoch), k)
        return Verdict.NEW


class PublishLog:
    """What one worker published: per stream, how many were numbered and which were unconfirmed."""

    __slots__ = ("_streams", "sent", "unconfirmed_count")

    def __init__(self) -> None:
        self._streams: dict[str, dict[str, list[Any]]] = {}
        self.sent = 0
        self.unconfirmed_count = 0

    def next_seq(self, channel: str, pub: str) -> int:
        by_pub = self._streams.get(channel)
        if by_pub is None:
            by_pub = self._streams[channel] = {}
        entry = by_pub.get(pub)
        if entry is None:
            entry = by_pub[pub] = [0, []]
        seq: int = entry[0]
        entry[0] += 1
        self.sent += 1
        return seq

    def unconfirmed(self, channel: str, pub: str, seq: int) -> None:
        self._streams[channel][pub][1].append(seq)
        self.unconfirmed_count += 1

    @property
    def confirmed(self) -> int:
        return self.sent - self.unconfirmed_count

    def table(self) -> Table:
        return {
            ch: {pub: (n, sorted(set(failed))) for pub, (n, failed) in by_pub.items()}
            for ch, by_pub in self._streams.items()
        }


@dataclass(slots=True)
class Tally:
    """A receiver settled against the expectation (sums over receivers with `+`)."""

    expected: int = 0
    received: int = 0  # expected messages it saw
    lost: int = 0
    extra: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.expected + other.expected,
            self.received + other.received,
            self.lost + other.lost,
            self.extra + other.extra,
        )


class Expectation:
    """The merged publish tables: which messages every subscriber of a channel must receive."""

    __slots__ = ("_streams",)

    def __init__(self, tables: Iterable[Mapping[str, Mapping[str, tuple[int, list[int]]]]]) -> None:
        merged: dict[str, dict[str, tuple[int, frozenset[int]]]] = {}
        for table in tables:
            for channel, by_pub in table.items():
                dest = merged.setdefault(channel, {})
                for pub, (n, failed) in by_pub.items():
                    if pub in dest:  # the same publisher id from two tables: keep the union
                        n0, f0 = dest[pub]
                        dest[pub] = (max(n0, n), f0 | frozenset(failed))
                    else:
                        dest[pub] = (n, frozenset(failed))
        self._streams = merged

    def table(self) -> Table:
        return {ch: {pub: (n, sorted(f)) for pub, (n, f) in by_pub.items()} for ch, by_pub in self._streams.items()}

    def expects(self, channel: str, pub: str, seq: int) -> bool:
        """Whether (channel, pub, seq) is a confirmed publication."""
        entry = self._streams.get(channel, {}).get(pub)
        return entry is not None and seq < entry[0] and seq not in entry[1]

    def settle(self, log: ReceiverLog) -> Tally:
        tally = Tally()
        for channel in log.channels:
            for pub, (n, failed) in self._streams.get(channel, {}).items():
                expected = n - len(failed)
                stream = log.streams.get((channel, pub))
                got = 0
                if stream is not None:
                    got = stream.count_below(n) - sum(1 for f in failed if f in stream)
                tally.expected += expected
                tally.received += got
                tally.lost += expected - got
        for (channel, pub), stream in log.streams.items():
            entry = self._streams.get(channel, {}).get(pub) if channel in log.channels else None
            confirmed = 0 if entry is None else stream.count_below(entry[0]) - sum(1 for f in entry[1] if f in stream)
            tally.extra += stream.seen - confirmed
        return tally
