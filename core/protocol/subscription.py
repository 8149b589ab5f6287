"""One channel of one connection, without I/O: its position, and the recovery of a resume.

A subscription delivers each offset once and in order. While it recovers (the session registered
it and the adapter reads history, DESIGN invariant 5) it buffers live publications; when history
arrives, `finish_recovery` sends the missed messages, then the buffered ones newer than them.
"""

from __future__ import annotations

from typing import Any

from .envelope import ZERO_KEY, Position, Publication, offset_key

__all__ = ["Subscription"]


class Subscription:
    """One channel of one connection: the last offset delivered and the epoch it belongs to."""

    __slots__ = ("channel", "last", "epoch", "pending", "before")

    def __init__(self, channel: str, last: tuple[int, int] = ZERO_KEY, epoch: str | None = None) -> None:
        self.channel = channel
        self.last = last
        self.epoch = epoch
        self.pending: list[Publication] | None = None  # not None while recovering
        self.before: tuple[tuple[int, int], str | None] | None = None  # the position a failed resume restores

    def accept(self, pub: Publication) -> bool:
        """Whether `pub` is the next thing to deliver now (updates the position if so)."""
        if self.pending is None:
            if pub.epoch != self.epoch:
                if self.epoch is not None:
                    # The channel's history was lost and restarted: offsets of the new epoch are
                    # not comparable with the old ones. The envelope carries the new epoch.
                    self.last = ZERO_KEY
                self.epoch = pub.epoch
        elif pub.key > self.last:
            self.pending.append(pub)
            return False
        if pub.key <= self.last:
            return False
        self.last = pub.key
        return True

    def finish_recovery(self, result: Any, since: Position | None) -> tuple[list[Publication], int, bool]:
        """History was read (a HistoryResult): leave the recovering state. Returns what to send now
        — the missed messages, then the live ones buffered meanwhile, each offset once and in
        order — how many of them came from history, and whether the gap since `since` was filled."""
        pending, self.pending = self.pending or [], None
        recovered = since is not None and result.recovered and since.epoch == result.epoch
        if recovered:
            missed = [m for m in result.messages if m.key > self.last]
        else:  # nothing to recover (or it cannot be): start at the channel's latest offset
            self.last, missed = offset_key(result.offset), []
        self.epoch = result.epoch
        send = []
        for pub in (*missed, *pending):
            if pub.epoch == self.epoch and pub.key > self.last:
                self.last = pub.key
                send.append(pub)
        return send, len(missed), recovered
