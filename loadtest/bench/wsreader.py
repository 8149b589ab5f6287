"""Micro-benchmark of the WebSocket frame reader (core/protocol/wsreader.py): ns per frame.

    python loadtest/bench/wsreader.py [path/to/wsreader.py]

Feeds pre-built masked client frames to `FrameReader.feed` in 64 KiB reads, the way the node's
transport hands them over: small unfragmented text messages (the common path), larger ones, and
one fragmented message. With a path, that file's FrameReader is measured instead of the
installed one (to compare two versions of the reader).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import struct
import sys
import time
from typing import Any


def _frame(op: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    head = struct.pack("!BB", b0, 0x80 | n) if n < 126 else struct.pack("!BBH", b0, 0xFE, n)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def _reader_class(path: str | None) -> Any:
    if path is None:
        from herald.core.protocol.wsreader import FrameReader

        return FrameReader
    spec = importlib.util.spec_from_file_location("herald.core.protocol._bench_wsreader", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "herald.core.protocol"
    spec.loader.exec_module(module)
    return module.FrameReader


def _bench(cls: Any, chunks: list[bytes], frames: int, rounds: int = 7) -> float:
    """Best-of-median ns per frame over `rounds`."""
    samples = []
    for _ in range(rounds):
        reader = cls(65_536)
        start = time.perf_counter_ns()
        for chunk in chunks:
            reader.feed(chunk)
        samples.append((time.perf_counter_ns() - start) / frames)
    return statistics.median(samples)


def main() -> None:
    cls = _reader_class(sys.argv[1] if len(sys.argv) > 1 else None)
    cases = {}
    small = _frame(0x1, b'{"type":"publish","channel":"room:1","data":{"text":"hello world"}}')
    cases["small text (68 B), 64 KiB reads"] = ([small * (65_536 // len(small))] * 200, 65_536 // len(small) * 200)
    cases["small text, one frame per read"] = ([small] * 50_000, 50_000)
    mid = _frame(0x1, b"x" * 4000)
    cases["4 KB text, 64 KiB reads"] = ([mid * 16] * 500, 16 * 500)
    frag = b"".join(_frame(0x1 if i == 0 else 0x0, b"y" * 64, fin=i == 1023) for i in range(1024))
    cases["64 KiB message in 1024 fragments"] = ([frag] * 20, 1024 * 20)
    for name, (chunks, frames) in cases.items():
        print(f"{name:40s} {_bench(cls, chunks, frames):8.0f} ns/frame")


if __name__ == "__main__":
    main()
