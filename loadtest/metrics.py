"""A snapshot of the servers' Prometheus metrics before and after a run, for the report.

Kept: every `herald_*` and `process_*` sample except `_created`, with its value after the run and,
for counters, how much it grew during the run. From `herald_delivery_latency_seconds` (publish to
local fan-out, measured by the node) the report also gets the mean and bucket-bound p50/p99.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import aiohttp

__all__ = ["parse_prometheus", "scrape_all", "summarize"]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LE = re.compile(r'le="([^"]+)"')
_LATENCY = "herald_delivery_latency_seconds"
_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels}` -> value for the samples worth reporting."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name = m.group(1)
        if not name.startswith(("herald_", "process_")) or name.endswith("_created"):
            continue
        if name.endswith("_bucket") and not name.startswith(_LATENCY):
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[name + (m.group(2) or "")] = value
    return out


async def _scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float] | str:
    try:
        async with session.get(url, timeout=_TIMEOUT) as resp:
            if resp.status != 200:
                return f"HTTP {resp.status}"
            return parse_prometheus(await resp.text())
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"unreachable ({type(exc).__name__})"


async def scrape_all(urls: tuple[str, ...]) -> dict[str, dict[str, float] | str]:
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(_scrape(session, u) for u in urls))
    return dict(zip(urls, results, strict=True))


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket holding quantile q, from cumulative (le, count) pairs."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return buckets[-1][0]


def _fanout_latency(metrics: dict[str, float], before: dict[str, float]) -> dict[str, Any] | None:
    count = metrics.get(_LATENCY + "_count", 0.0) - before.get(_LATENCY + "_count", 0.0)
    if count <= 0:
        return None
    total = metrics.get(_LATENCY + "_sum", 0.0) - before.get(_LATENCY + "_sum", 0.0)
    buckets = []
    for key, value in metrics.items():
        if key.startswith(_LATENCY + "_bucket"):
            m = _LE.search(key)
            if m is not None:
                buckets.append((float(m.group(1)), value - before.get(key, 0.0)))
    buckets.sort()

    def ms(v: float | None) -> float | None:
        return None if v is None else (math.inf if math.isinf(v) else round(v * 1000, 3))

    return {
        "count": int(count),
        "mean_ms": round(total / count * 1000, 3),
        "p50_le_ms": ms(_quantile(buckets, 0.5)),
        "p99_le_ms": ms(_quantile(buckets, 0.99)),
    }


def summarize(before: dict[str, dict[str, float] | str], after: dict[str, dict[str, float] | str]) -> dict[str, Any]:
    """Per metrics URL: `{"metrics": {sample: {"value", "delta"?}}, "fanout_latency": ...}` or `{"error"}`."""
    out: dict[str, Any] = {}
    for url, now in after.items():
        if isinstance(now, str):
            out[url] = {"error": now}
            continue
        then = before.get(url)
        then = then if isinstance(then, dict) else {}
        metrics: dict[str, dict[str, float]] = {}
        for key, value in sorted(now.items()):
            if "_bucket" in key:
                continue
            entry = {"value": value}
            name = key.split("{", 1)[0]
            if name.endswith(("_total", "_count", "_sum")) and then:
                entry["delta"] = value - then.get(key, 0.0)
            metrics[key] = entry
        out[url] = {"metrics": metrics, "fanout_latency": _fanout_latency(now, then)}
    return out
