"""The rebalancing planner (control/rebalance.py, pure): which ready nodes shed how many connections
in one round, and that repeated rounds converge."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from herald.control.rebalance import plan, spread

# A cluster: 1-8 nodes with 0-500 connections each.
clusters = st.dictionaries(st.sampled_from([f"n{i}" for i in range(8)]), st.integers(0, 500), min_size=1)
ratios = st.floats(0.01, 2.0)
caps = st.integers(1, 200)
min_means = st.floats(0.0, 50.0)


def test_spread_is_the_busiest_node_over_the_mean_minus_one() -> None:
    assert spread({"a": 30, "b": 10}) == 30 / 20 - 1
    assert spread({"a": 10, "b": 10, "c": 10}) == 0.0
    assert spread({}) == 0.0
    assert spread({"a": 0, "b": 0}) == 0.0  # no connections: nothing is unbalanced


def test_a_cluster_within_the_bound_gets_an_empty_plan() -> None:
    # mean 20, bound 24: the busiest node is exactly at the bound
    assert plan({"a": 24, "b": 18, "c": 18}, ratio=0.2, max_per_node=100) == {}
    assert plan({"a": 20, "b": 20}, ratio=0.2, max_per_node=100) == {}


def test_nodes_over_the_bound_shed_down_to_the_mean_not_just_to_the_bound() -> None:
    """Scale-out from 2 to 3 nodes: 40/40/0, mean 26.67 → each old node sheds 40 - 27 = 13."""
    assert plan({"a": 40, "b": 40, "c": 0}, ratio=0.2, max_per_node=100) == {"a": 13, "b": 13}


def test_only_nodes_above_the_bound_shed() -> None:
    """mean 20, bound 24: `b` (23) is above the mean but within the bound, so it keeps its load."""
    assert plan({"a": 37, "b": 23, "c": 0}, ratio=0.2, max_per_node=100) == {"a": 17}


def test_a_round_is_capped_at_max_per_node() -> None:
    assert plan({"a": 400, "b": 400, "c": 0}, ratio=0.2, max_per_node=50) == {"a": 50, "b": 50}


def test_clusters_with_a_mean_below_min_mean_are_left_alone() -> None:
    assert plan({"a": 9, "b": 0}, ratio=0.2, max_per_node=100, min_mean=5) == {}
    assert plan({"a": 10, "b": 0}, ratio=0.2, max_per_node=100, min_mean=5) == {"a": 5}


def test_a_single_node_or_no_node_never_sheds() -> None:
    assert plan({"a": 1000}, ratio=0.2, max_per_node=100) == {}
    assert plan({}, ratio=0.2, max_per_node=100) == {}


def test_no_plan_when_moving_one_connection_cannot_help() -> None:
    """2 vs 1: spread 0.33 is over 0.2, but the busiest node is already at ceil(mean)."""
    assert spread({"a": 2, "b": 1}) > 0.2
    assert plan({"a": 2, "b": 1}, ratio=0.2, max_per_node=100) == {}


@settings(max_examples=400, deadline=None)
@given(clusters, ratios, caps, min_means)
def test_a_plan_sheds_at_most_each_nodes_excess_over_the_mean(
    conns: dict[str, int], ratio: float, cap: int, min_mean: float
) -> None:
    """Property: a node sheds ≥ 1 and ≤ max_per_node, never more than its excess over the mean (so
    no shedding node ends below the mean), and nodes at or below the bound are never asked."""
    shed = plan(conns, ratio=ratio, max_per_node=cap, min_mean=min_mean)
    mean = sum(conns.values()) / len(conns)
    for node, count in shed.items():
        assert 1 <= count <= cap
        assert count <= conns[node] - mean
        assert conns[node] > mean * (1 + ratio)
    assert sum(shed.values()) <= sum(max(0.0, n - mean) for n in conns.values())


@settings(max_examples=400, deadline=None)
@given(clusters, ratios, caps, min_means)
def test_an_empty_plan_means_balanced_too_small_or_nothing_to_gain(
    conns: dict[str, int], ratio: float, cap: int, min_mean: float
) -> None:
    """Property: a plan is empty only when the spread is within the ratio, the mean is below
    min_mean, there is one node, or the busiest node is already at ceil(mean); otherwise the
    busiest node is always in the plan."""
    shed = plan(conns, ratio=ratio, max_per_node=cap, min_mean=min_mean)
    mean = sum(conns.values()) / len(conns)
    busiest = max(conns.values())
    unbalanced = len(conns) >= 2 and mean >= min_mean and spread(conns) > ratio and busiest - math.ceil(mean) > 0
    assert bool(shed) == unbalanced
    if shed:
        assert any(conns[n] == busiest for n in shed)


def _land_on_least_loaded(conns: dict[str, int], shed: dict[str, int]) -> dict[str, int]:
    """An ideal balancer: every shed connection reconnects to the node with the fewest connections."""
    after = {n: c - shed.get(n, 0) for n, c in conns.items()}
    for _ in range(sum(shed.values())):
        least = min(after, key=lambda n: (after[n], n))
        after[least] += 1
    return after


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from([f"n{i}" for i in range(6)]), st.integers(0, 200), min_size=2),
    ratios,
    st.integers(1, 50),
)
def test_repeated_rounds_converge_with_a_least_loaded_balancer(conns: dict[str, int], ratio: float, cap: int) -> None:
    """Property: with shed connections landing on the least-loaded node, each round lowers the
    excess above ceil(mean) by what it shed, so rounds stop (empty plan) within that many rounds,
    and the total number of connections never changes."""
    total = sum(conns.values())
    target = math.ceil(total / len(conns))

    def excess(c: dict[str, int]) -> int:
        return sum(max(0, n - target) for n in c.values())

    budget = excess(conns) + 1
    for _ in range(budget):
        shed = plan(conns, ratio=ratio, max_per_node=cap, min_mean=0.0)
        if not shed:
            break
        before = excess(conns)
        conns = _land_on_least_loaded(conns, shed)
        assert excess(conns) == before - sum(shed.values())
        assert sum(conns.values()) == total
    else:
        raise AssertionError(f"no convergence within {budget} rounds: {conns}")
    assert plan(conns, ratio=ratio, max_per_node=cap, min_mean=0.0) == {}
