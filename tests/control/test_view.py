"""The cluster view (control/view.py, pure): percentiles of the latency histogram, member states,
rates over the heartbeat window, totals and the connection balance of GET /admin/cluster."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.control.view import STATES, ClusterView, percentile

BOUNDS = [0.001, 0.005, 0.01, 0.05, 0.1]


def node(
    state: str = "ready",
    ws: int = 0,
    sse: int = 0,
    counters: dict[str, float] | None = None,
    latency: list[int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "role": "node",
        "state": state,
        "connections": {"ws": ws, "sse": sse},
        "counters": counters or {},
        **extra,
    }
    if latency is not None:
        status["latency"] = {"bounds": BOUNDS, "counts": latency}
    return status


# --- percentile --------------------------------------------------------------------------------


def test_percentile_interpolates_linearly_inside_its_bucket() -> None:
    """Like Prometheus' histogram_quantile: rank q·total, linear between the bucket's bounds."""
    assert percentile([1, 2, 4], [0, 10, 0, 0], 0.5) == pytest.approx(1.5)
    assert percentile([1, 2, 4], [0, 10, 0, 0], 0.1) == pytest.approx(1.1)
    # 4 observations ≤ 1, 4 in (1, 2]: the median is the top of the first bucket
    assert percentile([1, 2, 4], [4, 4, 0, 0], 0.5) == pytest.approx(1.0)
    assert percentile([1, 2, 4], [4, 4, 0, 0], 0.75) == pytest.approx(1.5)
    # the first bucket's lower bound is 0
    assert percentile([1, 2, 4], [10, 0, 0, 0], 0.5) == pytest.approx(0.5)
    # empty buckets before the rank are skipped
    assert percentile([1, 2, 4], [0, 0, 8, 0], 0.5) == pytest.approx(3.0)


def test_percentile_in_the_overflow_bucket_is_the_highest_bound() -> None:
    assert percentile([1, 2, 4], [0, 0, 0, 5], 0.5) == 4.0
    assert percentile([1, 2, 4], [99, 0, 0, 1], 0.999) == 4.0


def test_percentile_without_observations_is_none() -> None:
    assert percentile([1, 2, 4], [0, 0, 0, 0], 0.5) is None
    assert percentile([1, 2, 4], [], 0.99) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 1000), min_size=len(BOUNDS) + 1, max_size=len(BOUNDS) + 1),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_percentile_is_monotonic_and_within_the_bounds(counts: list[int], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    a, b = percentile(BOUNDS, counts, lo), percentile(BOUNDS, counts, hi)
    if sum(counts) == 0:
        assert a is None and b is None
        return
    assert a is not None and b is not None
    assert 0.0 <= a <= b <= BOUNDS[-1]


# --- states -------------------------------------------------------------------------------------


def test_a_member_is_dead_once_its_heartbeat_is_older_than_the_timeout() -> None:
    view = ClusterView(member_timeout=5.0)
    view.update({"node:a": (100.0, node()), "node:b": (100.0, node("draining"))})
    assert view.state("node:a", 104.0) == "ready"
    assert view.state("node:a", 105.0) == "ready"  # exactly at the timeout: still alive
    assert view.state("node:a", 105.1) == "dead"
    assert view.state("node:b", 101.0) == "draining"
    assert view.dead(106.0) == ["node:a", "node:b"]
    assert view.dead(101.0) == []


def test_a_member_marked_dead_is_dead_even_with_a_recent_heartbeat() -> None:
    view = ClusterView(member_timeout=5.0)
    view.update({"node:a": (100.0, node("dead", cleaned={"subscriptions": 3}))})
    assert view.state("node:a", 100.5) == "dead"
    doc = view.render(100.5)
    assert doc["members"][0]["state"] == "dead"
    assert doc["members"][0]["cleaned"] == {"subscriptions": 3}


def test_unknown_or_missing_states_read_as_ready_and_known_ones_pass_through() -> None:
    view = ClusterView(member_timeout=5.0)
    members = {f"node:{s}": (100.0, node(s)) for s in STATES if s != "dead"}
    members["node:weird"] = (100.0, node("sleeping"))
    members["router:r"] = (100.0, {"role": "router"})
    view.update(members)
    assert {m: view.state(m, 100.0) for m in members} == {
        "node:starting": "starting",
        "node:ready": "ready",
        "node:draining": "draining",
        "node:drained": "drained",
        "node:weird": "ready",
        "router:r": "ready",
    }


# --- rates and latency over the window -----------------------------------------------------------


def test_rates_are_counter_deltas_over_the_window() -> None:
    view = ClusterView(member_timeout=60.0, window=3)
    for t, n in ((100.0, 0), (102.0, 100), (104.0, 300), (106.0, 700)):
        view.update({"node:a": (t, node(counters={"messages_out": n, "published": n / 10}))})
    # the window holds the last 3 samples (102, 104, 106): (700 - 100) / 4 s
    rates = view.render(106.0)["members"][0]["rates"]
    assert rates == {"messages_out": 150.0, "published": 15.0}


def test_a_snapshot_without_a_new_heartbeat_adds_no_sample() -> None:
    view = ClusterView(member_timeout=60.0)
    view.update({"node:a": (100.0, node(counters={"messages_in": 0}))})
    view.update({"node:a": (100.0, node(counters={"messages_in": 50}))})  # same heartbeat time
    assert view.render(100.0)["members"][0]["rates"] == {}  # one sample: no rate yet
    view.update({"node:a": (102.0, node(counters={"messages_in": 10}))})
    assert view.render(102.0)["members"][0]["rates"] == {"messages_in": 5.0}


def test_a_counter_that_went_backwards_gives_a_zero_rate_not_a_negative_one() -> None:
    """A restarted node with the same id starts its counters at 0 again."""
    view = ClusterView(member_timeout=60.0)
    view.update({"node:a": (100.0, node(counters={"messages_out": 1000}))})
    view.update({"node:a": (101.0, node(counters={"messages_out": 10}))})
    assert view.render(101.0)["members"][0]["rates"] == {"messages_out": 0.0}


def test_latency_percentiles_come_from_the_histogram_deltas_of_the_window() -> None:
    view = ClusterView(member_timeout=60.0)
    # 1000 old fast deliveries before the window, then 10 in (0.01, 0.05] during it
    view.update({"node:a": (100.0, node(latency=[1000, 0, 0, 0, 0, 0]))})
    view.update({"node:a": (101.0, node(latency=[1000, 0, 0, 10, 0, 0]))})
    entry = view.render(101.0)["members"][0]
    assert entry["latency"]["p50"] == pytest.approx(0.03)
    assert entry["latency"]["p99"] == pytest.approx(0.01 + 0.04 * 9.9 / 10)


def test_forgotten_members_lose_their_samples() -> None:
    view = ClusterView(member_timeout=60.0)
    view.update({"node:a": (100.0, node(counters={"messages_in": 0}))})
    view.update({})
    view.update({"node:a": (101.0, node(counters={"messages_in": 100}))})
    assert view.render(101.0)["members"][0]["rates"] == {}


# --- totals, balance, nodes() ---------------------------------------------------------------------


def test_totals_count_live_nodes_and_routers_and_skip_dead_members() -> None:
    view = ClusterView(member_timeout=5.0)
    view.update(
        {
            "node:a": (
                100.0,
                node(
                    ws=10,
                    sse=2,
                    counters={"messages_in": 0, "messages_out": 0, "published": 0},
                    latency=[0, 0, 0, 0, 0, 0],
                ),
            ),
            "node:b": (100.0, node("draining", ws=5, counters={"messages_out": 0}, latency=[0, 0, 0, 0, 0, 0])),
            "node:dead": (90.0, node(ws=100, counters={"messages_out": 0})),
            "router:r": (100.0, {"role": "router", "partitions": [0, 1], "lag": 3, "counters": {"published": 0}}),
            "control:c": (100.0, {"role": "control"}),
        }
    )
    view.update(
        {
            "node:a": (
                102.0,
                node(
                    ws=10,
                    sse=2,
                    counters={"messages_in": 20, "messages_out": 200, "published": 4},
                    latency=[0, 10, 0, 0, 0, 0],
                ),
            ),
            "node:b": (102.0, node("draining", ws=5, counters={"messages_out": 100}, latency=[0, 0, 10, 0, 0, 0])),
            "node:dead": (90.0, node(ws=100, counters={"messages_out": 0})),
            "router:r": (102.0, {"role": "router", "partitions": [0, 1], "lag": 3, "counters": {"published": 40}}),
            "control:c": (102.0, {"role": "control"}),
        }
    )
    doc = view.render(102.0, leader="c")
    assert doc["leader"] == "c" and doc["now"] == 102.0
    # dead node's 100 connections are not counted; draining nodes still are
    assert doc["totals"] == {"connections": 17, "messages_in": 10.0, "messages_out": 150.0, "published": 22.0}
    # the cluster latency merges the live nodes' windows: 10 in (0.001, 0.005], 10 in (0.005, 0.01]
    assert doc["latency"]["p50"] == pytest.approx(0.005)
    by_id = {m["member"]: m for m in doc["members"]}
    assert [m["member"] for m in doc["members"]] == ["node:a", "node:b", "node:dead", "router:r", "control:c"]
    assert by_id["node:a"]["connections"] == 12 and by_id["node:a"]["transports"] == {"ws": 10, "sse": 2}
    assert by_id["node:dead"]["state"] == "dead" and by_id["node:dead"]["age"] == 12.0
    assert by_id["router:r"]["partitions"] == [0, 1] and by_id["router:r"]["lag"] == 3
    assert by_id["control:c"]["leader"] is True
    assert "cleaned" not in by_id["node:dead"]  # dead by timeout, not cleaned up yet


def test_balance_is_over_ready_nodes_only() -> None:
    view = ClusterView(member_timeout=5.0)
    view.update(
        {
            "node:a": (100.0, node(ws=30)),
            "node:b": (100.0, node(ws=10)),
            "node:c": (100.0, node("draining", ws=500)),
            "node:d": (80.0, node(ws=500)),
        }
    )
    assert view.render(100.0)["balance"] == {"nodes": 2, "mean": 20.0, "spread": 0.5}
    assert view.nodes(100.0) == {"a": 30, "b": 10}
    assert view.nodes(100.0, states=("ready", "draining")) == {"a": 30, "b": 10, "c": 500}


def test_an_empty_cluster_has_zero_balance() -> None:
    view = ClusterView(member_timeout=5.0)
    view.update({})
    doc = view.render(1.0)
    assert doc["members"] == [] and doc["balance"] == {"nodes": 0, "mean": 0.0, "spread": 0.0}
    assert doc["latency"] == {"p50": None, "p99": None}
    view.update({"node:a": (1.0, node()), "node:b": (1.0, node())})
    assert view.render(1.0)["balance"] == {"nodes": 2, "mean": 0.0, "spread": 0.0}
