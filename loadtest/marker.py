"""The load marker a publisher puts in every message's `data`.

A marker says who published the message, its sequence number on (channel, publisher) and when it
was sent, as `time.monotonic_ns()`. CLOCK_MONOTONIC is system-wide on Linux, so a receiver in
another worker process on the same host computes the end-to-end latency from it directly.

Published data is `{"p": pub, "s": seq, "t": ts, "x": padding}`; a `chat` message's data is
`{"text": T}` with the marker in the text: `lt|pub|seq|ts|padding`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

__all__ = ["Marker", "make_data", "make_text", "padding", "read_marker"]

_TEXT_PREFIX = "lt|"
_MAX_SEQ = 1 << 40


class Marker(NamedTuple):
    pub: str
    seq: int
    ts: int


def padding(payload_size: int, pub: str) -> str:
    """Padding that brings the JSON of a marker for `pub` to about `payload_size` bytes."""
    base = len(orjson.dumps({"p": pub, "s": 1000, "t": 10**15, "x": ""}))
    return "x" * max(0, payload_size - base)


def make_data(pub: str, seq: int, ts: int, pad: str) -> dict[str, Any]:
    return {"p": pub, "s": seq, "t": ts, "x": pad}


def make_text(pub: str, seq: int, ts: int, pad: str) -> str:
    return f"{_TEXT_PREFIX}{pub}|{seq}|{ts}|{pad}"


def read_marker(data: Any) -> Marker | None:
    """The marker in a delivered message's `data`, or None if it carries none (not ours)."""
    if type(data) is not dict:
        return None
    pub = data.get("p")
    if pub is not None:
        seq, ts = data.get("s"), data.get("t")
        if type(pub) is str and type(seq) is int and type(ts) is int and 0 <= seq < _MAX_SEQ:
            return Marker(pub, seq, ts)
        return None
    text = data.get("text")
    if type(text) is str and text.startswith(_TEXT_PREFIX):
        parts = text.split("|", 4)
        if len(parts) == 5:
            try:
                seq, ts = int(parts[2]), int(parts[3])
            except ValueError:
                return None
            if 0 <= seq < _MAX_SEQ:
                return Marker(parts[1], seq, ts)
    return None
