"""Per-worker counters and latency histograms, and how workers' results merge.

Latency goes into an HDR histogram (microseconds, 1 µs .. 1 h, 3 significant digits) and into one
coarser histogram per second since publishing started (for the plot). Workers ship them
encoded (HdrHistogram's compressed base64 form) and the runner decodes and adds them up.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from hdrh.histogram import HdrHistogram

from .accounting import Expectation

__all__ = ["WorkerStats", "new_histogram", "decode_histogram", "merge_results", "PERCENTILES"]

_MAX_US = 3_600_000_000
_TIMELINE_MAX_US = 60_000_000
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))

#: counters summed across workers (the Counter-valued fields merge key by key)
_COUNTERS = (
    "clients",
    "ready_at_start",
    "never_connected",
    "online",
    "delivered",
    "duplicated",
    "out_of_order",
    "foreign",
    "reconnects",
    "reconnect_attempts",
    "resumed",
    "unrecovered",
    "resumed_without_position",
    "gave_up",
    "published",
    "confirmed",
    "unconfirmed",
    "chat_skipped",
    "storm_drops",
)
_KINDS = ("connect_errors", "close_codes", "publish_errors", "error_replies")


def new_histogram(timeline: bool = False) -> HdrHistogram:
    return HdrHistogram(1, _TIMELINE_MAX_US if timeline else _MAX_US, 2 if timeline else 3)


def decode_histogram(encoded: str | bytes) -> HdrHistogram:
    return HdrHistogram.decode(encoded.encode() if isinstance(encoded, str) else encoded)


class WorkerStats:
    """What one worker measured. The receive path updates it on every message."""

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.t0_ns: int | None = None  # when publishing starts (monotonic ns, shared by all workers)
        self.counts: Counter[str] = Counter()
        self.kinds: dict[str, Counter[str]] = {k: Counter() for k in _KINDS}
        self._latency: dict[int, int] = {}  # rounded µs -> count
        self._timeline: dict[int, dict[int, int]] = {}  # second since t0 -> rounded µs -> count
        self.delivered_timeline: Counter[int] = Counter()
        self.published_timeline: Counter[int] = Counter()
        self.expect: Expectation | None = None  # known once publishing is over
        self.remaining = 0  # expected messages not yet received (valid once `expect` is set)
        self.last_delivery_ns = 0

    # --- hot path ---------------------------------------------------------------------------
    def delivered(self, now_ns: int, sent_ns: int) -> None:
        """One new delivery. Latencies are counted by value rounded to 11 significant bits (the
        resolution of a 3-digit HDR histogram) in plain dicts, and turned into HDR histograms when
        shipped: much cheaper per message than HdrHistogram.record_value."""
        us = (now_ns - sent_ns) // 1000
        if us < 1:
            us = 1
        elif us > _MAX_US:
            us = _MAX_US
        bits = us.bit_length()
        key = us if bits <= 11 else (us >> (bits - 11)) << (bits - 11)
        lat = self._latency
        lat[key] = lat.get(key, 0) + 1
        sec = (now_ns - self.t0_ns) // 1_000_000_000 if self.t0_ns is not None else 0
        per_sec = self._timeline.get(sec)
        if per_sec is None:
            per_sec = self._timeline[sec] = {}
        key = us if bits <= 7 else (us >> (bits - 7)) << (bits - 7)
        per_sec[key] = per_sec.get(key, 0) + 1
        self.delivered_timeline[sec] += 1
        self.counts["delivered"] += 1
        self.last_delivery_ns = now_ns

    def published(self, n: int = 1) -> None:
        now = time.monotonic_ns()
        sec = (now - self.t0_ns) // 1_000_000_000 if self.t0_ns is not None else 0
        self.published_timeline[sec] += n

    # --- live progress ----------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """A small snapshot for the live display."""
        now_sec = (time.monotonic_ns() - self.t0_ns) // 1_000_000_000 if self.t0_ns is not None else None
        recent = None
        if now_sec is not None:
            for sec in (now_sec, now_sec - 1):
                values = self._timeline.get(sec)
                if values:
                    recent = _percentile(values, 99.0)
                    break
        return {
            "counts": dict(self.counts),
            "recent_p99_us": recent,
            "errors": sum(sum(c.values()) for k, c in self.kinds.items() if k != "close_codes"),
        }

    @property
    def latency(self) -> HdrHistogram:
        return _histogram(self._latency)

    # --- shipping ---------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "counts": dict(self.counts),
            "kinds": {k: dict(v) for k, v in self.kinds.items()},
            "latency": self.latency.encode().decode(),
            "timeline": {sec: _histogram(v, timeline=True).encode().decode() for sec, v in self._timeline.items()},
            "delivered_timeline": dict(self.delivered_timeline),
            "published_timeline": dict(self.published_timeline),
            "last_delivery_ns": self.last_delivery_ns,
        }


def _histogram(values: dict[int, int], timeline: bool = False) -> HdrHistogram:
    hist = new_histogram(timeline)
    top = _TIMELINE_MAX_US if timeline else _MAX_US
    for value, count in values.items():
        hist.record_value(min(value, top), count)
    return hist


def _percentile(values: dict[int, int], p: float) -> int:
    target = sum(values.values()) * p / 100
    seen = 0
    for value in sorted(values):
        seen += values[value]
        if seen >= target:
            return value
    return max(values)


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' `result()`s added up: counts, kinds, one latency histogram, one timeline."""
    counts: Counter[str] = Counter()
    kinds: dict[str, Counter[str]] = {k: Counter() for k in _KINDS}
    latency = new_histogram()
    timeline: dict[int, HdrHistogram] = {}
    delivered: Counter[int] = Counter()
    published: Counter[int] = Counter()
    last = 0
    for res in results:
        counts.update(res["counts"])
        for k, v in res["kinds"].items():
            kinds.setdefault(k, Counter()).update(v)
        latency.add(decode_histogram(res["latency"]))
        for sec, enc in res["timeline"].items():
            hist = decode_histogram(enc)
            if int(sec) in timeline:
                timeline[int(sec)].add(hist)
            else:
                timeline[int(sec)] = hist
        delivered.update({int(k): v for k, v in res["delivered_timeline"].items()})
        published.update({int(k): v for k, v in res["published_timeline"].items()})
        last = max(last, res["last_delivery_ns"])
    for name in _COUNTERS:
        counts.setdefault(name, 0)
    return {
        "counts": counts,
        "kinds": kinds,
        "latency": latency,
        "timeline": timeline,
        "delivered_timeline": delivered,
        "published_timeline": published,
        "last_delivery_ns": last,
    }
