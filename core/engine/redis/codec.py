"""How publications travel through Redis: history/log payloads and node inbox batches (msgpack)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from ...protocol.envelope import Delivery, Disconnect, Publication, Signal

__all__ = ["decoded", "pack_payload", "unpack_publication", "pack_batch", "unpack_batch"]


def decoded(value: bytes | str) -> str:
    """A reply's text (redis-py answers bytes; some replies are already str)."""
    return value.decode() if isinstance(value, bytes) else value


def pack_payload(event: str, sender: str | None, data: Any) -> bytes:
    packed: bytes = msgpack.packb([event, sender, data], use_bin_type=True)
    return packed


def _ms(offset: str) -> int:
    return int(offset.partition("-")[0])


def unpack_publication(channel: str, offset: str, epoch: str, payload: bytes) -> Publication:
    event, sender, data = msgpack.unpackb(payload, raw=False)
    return Publication(channel, offset, epoch, data, event, sender, _ms(offset))  # type: ignore[arg-type]


# Inbox batches: a list of items, each one of
#   ["m", channel, offset, epoch, payload]   a publication
#   ["g", channel, frame]                    a signal (join/leave/user_status)
#   ["x", user, code]                        disconnect every connection of user


def pack_batch(items: Sequence[list[Any]]) -> bytes:
    packed: bytes = msgpack.packb(list(items), use_bin_type=True)
    return packed


def unpack_batch(raw: bytes) -> list[Delivery]:
    out: list[Delivery] = []
    for item in msgpack.unpackb(raw, raw=False):
        kind = item[0]
        if kind == "m":
            out.append(unpack_publication(item[1], item[2], item[3], item[4]))
        elif kind == "g":
            out.append(Signal(item[1], msgpack.unpackb(item[2], raw=False)))
        elif kind == "x":
            out.append(Disconnect(item[1], int(item[2])))
    return out
