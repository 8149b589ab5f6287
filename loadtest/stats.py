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
_COUNTERS = ("clients", "ready_at_start", "never_connected", "online", "delivered", "duplicated", "out_of_order",
             "foreign", "reconnects", "reconnect_attempts", "resumed", "unrecovered",
             "resumed_without_position", "gave_up", "published", "confirmed", "unconfirmed", "chat_skipped",
             "storm_drops")
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
        self.latency = new_histogram()
        self.timeline: dict[int, HdrHistogram] = {}
        self.delivered_timeline: Counter[int] = Counter()
        self.published_timeline: Counter[int] = Counter()
        self.expect: Expectation | None = None  # known once publishing is over
        self.remaining = 0  # expected messages not yet received (valid once `expect` is set)
        self.last_delivery_ns = 0

    # --- hot path ---------------------------------------------------------------------------
    def delivered(self, now_ns: int, sent_ns: int) -> None:
        us = (now_ns - sent_ns) // 1000
        us = 1 if us < 1 else (_MAX_US if us > _MAX_US else us)
        self.latency.record_value(us)
        sec = (now_ns - self.t0_ns) // 1_000_000_000 if self.t0_ns is not None else 0
        hist = self.timeline.get(sec)
        if hist is None:
            hist = self.timeline[sec] = new_histogram(timeline=True)
        hist.record_value(us if us <= _TIMELINE_MAX_US else _TIMELINE_MAX_US)
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
                hist = self.timeline.get(sec)
                if hist is not None and hist.get_total_count():
                    recent = hist.get_value_at_percentile(99.0)
                    break
        return {"counts": dict(self.counts), "recent_p99_us": recent,
                "errors": sum(sum(c.values()) for k, c in self.kinds.items() if k != "close_codes")}

    # --- shipping ---------------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "counts": dict(self.counts),
            "kinds": {k: dict(v) for k, v in self.kinds.items()},
            "latency": self.latency.encode().decode(),
            "timeline": {sec: h.encode().decode() for sec, h in self.timeline.items()},
            "delivered_timeline": dict(self.delivered_timeline),
            "published_timeline": dict(self.published_timeline),
            "last_delivery_ns": self.last_delivery_ns,
        }


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
    return {"counts": counts, "kinds": kinds, "latency": latency, "timeline": timeline,
            "delivered_timeline": delivered, "published_timeline": published, "last_delivery_ns": last}
