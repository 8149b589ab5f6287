"""Connection rebalancing after scale-out (sans-I/O): which nodes shed how many connections.

New nodes get no existing connections; clients only move when they reconnect. Each round asks the
nodes above the mean by more than `ratio` to shed connections (reconnect advisory `rebalance`),
at most `max_per_node` each, so the cluster sees a steady trickle, not a storm. Shed clients land
wherever the load balancer sends them (mostly the emptier nodes, since they hold few
connections); rounds repeat until the spread is within the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["plan", "spread"]


def spread(connections: Mapping[str, int]) -> float:
    """How far the busiest node is above the mean, as a ratio (0.25 = 25 % above)."""
    if not connections:
        return 0.0
    mean = sum(connections.values()) / len(connections)
    return max(connections.values()) / mean - 1.0 if mean > 0 else 0.0


def plan(connections: Mapping[str, int], *, ratio: float, max_per_node: int, min_mean: float = 1.0) -> dict[str, int]:
    """{node: connections to shed} for one round; empty when the spread is within `ratio`.

    A node above `mean × (1 + ratio)` sheds down towards the mean (not just to the bound, so the
    cluster does not hover at the edge), capped at `max_per_node`. Clusters whose mean is below
    `min_mean` are left alone: a handful of connections is not worth moving.
    """
    if len(connections) < 2:
        return {}
    mean = sum(connections.values()) / len(connections)
    if mean < min_mean or spread(connections) <= ratio:
        return {}
    bound = mean * (1.0 + ratio)
    target = math.ceil(mean)
    return {
        node: min(n - target, max_per_node) for node, n in sorted(connections.items()) if n > bound and n - target > 0
    }
