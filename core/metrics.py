"""Hot-path metrics: plain-integer counters and a fixed-bucket histogram, exported to Prometheus
by a collector at scrape time. prometheus_client's own types take a lock per update, which costs
more than the delivery they count on the fan-out path; these are updated on the event loop only."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = ["LoopCounter", "LoopHistogram", "LoopMetrics"]


class LoopCounter:
    __slots__ = ("name", "doc", "value")

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc, self.value = name, doc, 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class LoopHistogram:
    __slots__ = ("name", "doc", "bounds", "counts", "total", "count")

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name, self.doc = name, doc
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


class LoopMetrics(Collector):
    """Registers itself; `counter()` and `histogram()` create metrics it exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counters: list[LoopCounter] = []
        self._histograms: list[LoopHistogram] = []
        registry.register(self)

    def counter(self, name: str, doc: str) -> LoopCounter:
        c = LoopCounter(name, doc)
        self._counters.append(c)
        return c

    def histogram(self, name: str, doc: str, bounds: Sequence[float]) -> LoopHistogram:
        h = LoopHistogram(name, doc, bounds)
        self._histograms.append(h)
        return h

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for c in self._counters:
            counter = CounterMetricFamily(c.name, c.doc)
            counter.add_metric([], c.value)
            yield counter
        for h in self._histograms:
            cumulative, buckets = 0, []
            for bound, n in zip((*h.bounds, float("inf")), h.counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            histogram = HistogramMetricFamily(h.name, h.doc)
            histogram.add_metric([], buckets, sum_value=h.total)
            yield histogram

    def describe(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        return self.collect()
