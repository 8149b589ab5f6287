"""The cluster as an operator sees it, computed from members' heartbeats (sans-I/O).

Members report cumulative counters and latency-histogram bucket counts; :class:`ClusterView` keeps
a short window of samples per member and turns them into states, rates and percentiles for
`GET /admin/cluster` and the dashboard. Time is passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ClusterView", "percentile", "STATES"]

#: Member states, in the order the dashboard sorts them.
STATES = ("starting", "ready", "draining", "drained", "dead")


def percentile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of a fixed-bucket histogram (`counts` has one more bucket than
    `bounds`: the overflow), interpolated linearly inside its bucket like Prometheus'
    histogram_quantile; None without observations."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for i, n in enumerate(counts):
        if n and cumulative + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1]) if bounds else None
            lower = bounds[i - 1] if i else 0.0
            return float(lower + (bounds[i] - lower) * (rank - cumulative) / n)
        cumulative += n
    return float(bounds[-1]) if bounds else None


def _connections(status: dict[str, Any]) -> int:
    """A node's connections over all transports, from its status."""
    return sum(v for v in (status.get("connections") or {}).values() if isinstance(v, int))


@dataclass(slots=True)
class _Sample:
    at: float
    counters: dict[str, float]
    latency: list[int] | None


class ClusterView:
    """Feed it every members() snapshot with `update()`; `render()` gives the JSON document."""

    def __init__(self, member_timeout: float, window: int = 10) -> None:
        self.member_timeout = member_timeout
        self._samples: dict[str, deque[_Sample]] = {}
        self._window = window
        self._members: dict[str, tuple[float, dict[str, Any]]] = {}
        self._bounds: list[float] = []

    def update(self, members: Mapping[str, tuple[float, dict[str, Any]]]) -> None:
        self._members = dict(members)
        for member in set(self._samples) - set(members):
            del self._samples[member]
        for member, (seen, status) in members.items():
            samples = self._samples.setdefault(member, deque(maxlen=self._window))
            if samples and samples[-1].at >= seen:
                continue  # no heartbeat since the last snapshot
            latency = status.get("latency")
            counts = None
            if isinstance(latency, dict) and isinstance(latency.get("counts"), list):
                counts = [int(c) for c in latency["counts"]]
                self._bounds = [float(b) for b in latency.get("bounds", [])]
            counters = {k: float(v) for k, v in (status.get("counters") or {}).items() if isinstance(v, (int, float))}
            samples.append(_Sample(seen, counters, counts))

    def state(self, member: str, now: float) -> str:
        seen, status = self._members[member]
        if status.get("state") == "dead" or now - seen > self.member_timeout:
            return "dead"
        state = status.get("state", "ready")
        return state if state in STATES else "ready"

    def dead(self, now: float) -> list[str]:
        """Members whose heartbeat lapsed (whether or not they were cleaned up yet)."""
        return [m for m in self._members if self.state(m, now) == "dead"]

    def _rates(self, member: str) -> tuple[dict[str, float], list[int] | None]:
        samples = self._samples.get(member)
        if not samples or len(samples) < 2:
            return {}, None
        first, last = samples[0], samples[-1]
        dt = last.at - first.at
        if dt <= 0:
            return {}, None
        rates = {k: max(0.0, (v - first.counters.get(k, 0.0)) / dt) for k, v in last.counters.items()}
        latency = None
        if first.latency is not None and last.latency is not None and len(first.latency) == len(last.latency):
            latency = [max(0, b - a) for a, b in zip(first.latency, last.latency, strict=True)]
        return rates, latency

    def _latency(self, counts: list[int] | None) -> dict[str, float | None]:
        if counts is None:
            return {"p50": None, "p99": None}
        return {"p50": percentile(self._bounds, counts, 0.5), "p99": percentile(self._bounds, counts, 0.99)}

    def nodes(self, now: float, states: Sequence[str] = ("ready",)) -> dict[str, int]:
        """Connections of the nodes in `states` (what rebalancing looks at)."""
        out = {}
        for member, (_, status) in self._members.items():
            if member.startswith("node:") and self.state(member, now) in states:
                out[member[5:]] = _connections(status)
        return out

    def oldest_report(self, now: float, states: Sequence[str] = ("ready",)) -> float:
        """When the least recent report of the nodes in `states` was made (inf without nodes)."""
        return min(
            (
                seen
                for member, (seen, _) in self._members.items()
                if member.startswith("node:") and self.state(member, now) in states
            ),
            default=float("inf"),
        )

    def render(self, now: float, *, leader: str | None = None) -> dict[str, Any]:
        members: list[dict[str, Any]] = []
        totals: dict[str, float] = {"connections": 0, "messages_in": 0.0, "messages_out": 0.0, "published": 0.0}
        cluster_latency: list[int] | None = None
        for member, (seen, status) in self._members.items():
            role, _, ident = member.partition(":")
            state = self.state(member, now)
            rates, latency = self._rates(member)
            entry: dict[str, Any] = {
                "member": member,
                "role": role,
                "id": ident,
                "state": state,
                "last_seen": seen,
                "age": round(max(0.0, now - seen), 3),
                "version": status.get("version"),
                "host": status.get("host"),
                "started": status.get("started"),
                "rates": {k: round(v, 2) for k, v in rates.items()},
            }
            if role == "node":
                entry["connections"] = _connections(status)
                entry["transports"] = status.get("connections") or {}
                entry["max_connections"] = status.get("max_connections")
                entry["channels"] = status.get("channels", 0)
                entry["inbox"] = status.get("inbox", 0)
                entry["latency"] = self._latency(latency)
                if state != "dead":
                    totals["connections"] += entry["connections"]
                    for k in ("messages_in", "messages_out", "published"):
                        totals[k] += rates.get(k, 0.0)
                    if latency is not None:
                        cluster_latency = (
                            latency
                            if cluster_latency is None
                            else [a + b for a, b in zip(cluster_latency, latency, strict=False)]
                        )
            elif role == "router":
                entry["partitions"] = status.get("partitions", [])
                entry["lag"] = status.get("lag", 0)
                entry["lag_by_partition"] = status.get("lag_by_partition", {})
                if state != "dead":
                    totals["published"] += rates.get("published", 0.0)
            elif role == "control":
                entry["leader"] = ident == leader
            if state == "dead" and "cleaned" in status:
                entry["cleaned"] = status["cleaned"]
            members.append(entry)
        members.sort(
            key=lambda m: (
                ("node", "router", "control").index(m["role"]) if m["role"] in ("node", "router", "control") else 3,
                m["id"],
            )
        )
        nodes = [m for m in members if m["role"] == "node" and m["state"] == "ready"]
        mean = (sum(m["connections"] for m in nodes) / len(nodes)) if nodes else 0.0
        spread = (max(m["connections"] for m in nodes) / mean - 1.0) if nodes and mean > 0 else 0.0
        return {
            "now": now,
            "leader": leader,
            "members": members,
            "totals": {k: round(v, 2) for k, v in totals.items()},
            "latency": self._latency(cluster_latency),
            "balance": {"nodes": len(nodes), "mean": round(mean, 2), "spread": round(spread, 4)},
        }
