"""The control-plane service (control/service.py) on the in-process MemoryEngine with a fake
clock: leader lease and takeover, when a member is declared dead and cleaned up, operator drain
orders, and rebalancing rounds against the nodes' reports. Nodes are simulated: their heartbeats
are written by the test and the orders they receive are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from herald.control.service import Control, ControlSettings
from herald.core.engine.base import PresenceEntry
from herald.core.engine.memory import MemoryEngine
from herald.core.protocol.envelope import ChannelName, Delivery, Order
from herald.core.protocol.errors import Conflict, NotFound


def _cleanups(control: Control) -> float:
    return control.metrics.registry.get_sample_value("herald_control_cleanups_total") or 0.0


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Cluster:
    """One MemoryEngine, simulated nodes (heartbeats + recorded orders), control replicas."""

    def __init__(self, **settings: Any) -> None:
        self.clock = Clock()
        self.engine = MemoryEngine(clock=self.clock)
        self.settings = ControlSettings(**settings)
        self.orders: dict[str, list[Order]] = {}

    def control(self, ident: str) -> Control:
        return Control(self.engine, self.settings, ident, clock=self.clock)

    async def node(self, node: str, connections: int, state: str = "ready") -> None:
        if node not in self.orders:
            self.orders[node] = []
            await self.engine.attach(node, lambda items, n=node: self._record(n, items))
        await self.engine.heartbeat(
            f"node:{node}", {"role": "node", "id": node, "state": state, "connections": {"ws": connections, "sse": 0}}
        )

    def _record(self, node: str, items: Sequence[Delivery]) -> None:
        self.orders[node].extend(i for i in items if isinstance(i, Order))

    async def report(self, placement: dict[str, int]) -> None:
        for node, n in placement.items():
            await self.node(node, n)

    def sheds(self, node: str) -> list[int]:
        return [o.args["count"] for o in self.orders.get(node, []) if o.action == "shed"]


# --- leadership ---------------------------------------------------------------------------------


async def test_one_replica_leads_and_a_standby_takes_over_when_the_lease_lapses() -> None:
    c = Cluster(lease_seconds=5.0)
    first, second = c.control("one"), c.control("two")
    await first.tick()
    await second.tick()
    assert first.is_leader and not second.is_leader
    assert second.leader == "one"  # learned from the leader's heartbeat
    c.clock.now += 4.9  # the leader stops ticking (it died); its lease runs until +5 s
    await second.tick()
    assert not second.is_leader
    c.clock.now += 0.2
    await second.tick()
    assert second.is_leader and second.latest["leader"] == "two"


# --- crash cleanup -----------------------------------------------------------------------------------


async def test_a_silent_node_is_cleaned_up_once_after_the_member_timeout() -> None:
    c = Cluster(member_timeout=3.0, dead_retention=10.0, auto_rebalance=False)
    control = c.control("one")
    await c.node("a", 1)
    await c.engine.subscribe("a", ChannelName("room:1"))
    await c.engine.presence_add(ChannelName("room:1"), PresenceEntry("cl1", "u1", "a"))
    await control.tick()
    c.clock.now += 3.5  # a is silent; the control has seen the engine healthy for a whole timeout
    await control.tick()  # cleans up and marks a dead
    await control.tick()  # the view shows the mark
    member = next(m for m in control.latest["members"] if m["id"] == "a")
    assert member["state"] == "dead" and member["cleaned"]["subscriptions"] == 1, member
    assert member["cleaned"]["presence"] == 1
    assert await c.engine.presence(ChannelName("room:1")) == []
    assert _cleanups(control) == 1
    await control.tick()  # already cleaned: not again
    assert _cleanups(control) == 1
    c.clock.now += 11.0  # after the retention the dead member is forgotten
    await control.tick()
    await control.tick()
    assert [m["id"] for m in control.latest["members"]] == ["one"]


async def test_nothing_is_declared_dead_before_the_control_saw_the_engine_healthy_for_a_timeout() -> None:
    """After an engine outage (or a control restart) every heartbeat looks old: not a crash."""
    c = Cluster(member_timeout=3.0, auto_rebalance=False)
    await c.node("a", 1)
    c.clock.now += 10.0  # the node's heartbeat is old when this replica starts
    control = c.control("one")
    await control.tick()
    assert _cleanups(control) == 0
    await c.node("a", 1)  # the node heartbeats again: it was alive all along
    c.clock.now += 1.0
    await control.tick()
    assert next(m for m in control.latest["members"] if m["id"] == "a")["state"] == "ready"
    assert _cleanups(control) == 0


# --- drain orders ----------------------------------------------------------------------------------------


async def test_drain_orders_go_to_live_nodes_only() -> None:
    c = Cluster(member_timeout=3.0, auto_rebalance=False)
    control = c.control("one")
    await c.report({"a": 5, "b": 5})
    await control.tick()
    assert await control.drain_node("a", 2.0) == {"node": "a", "state": "draining", "window": 2.0}
    assert c.orders["a"] == [Order("drain", {"window": 2.0})]
    assert await control.drain_node("a") == {"node": "a", "state": "draining"}
    assert c.orders["a"][-1] == Order("drain", {})
    with pytest.raises(NotFound):
        await control.drain_node("zzz")
    c.clock.now += 3.5
    await c.node("a", 5)
    await control.tick()  # b fell silent
    with pytest.raises(Conflict):
        await control.drain_node("b")
    assert c.orders["b"] == []


# --- rebalancing -------------------------------------------------------------------------------------------


async def test_automatic_rounds_shed_from_busy_nodes_once_per_interval() -> None:
    c = Cluster(rebalance_interval=5.0, rebalance_min_mean=5.0, lease_seconds=30.0)
    control = c.control("one")
    await c.report({"a": 30, "b": 30, "c": 0})
    await control.tick()
    assert c.sheds("a") == [10] and c.sheds("b") == [10] and c.sheds("c") == []
    assert c.orders["a"][0].args["window"] == 2.5  # half an interval
    await c.report({"a": 27, "b": 27, "c": 6})
    c.clock.now += 1.0
    await control.tick()  # within the interval: no round
    assert c.sheds("a") == [10]
    await c.report({"a": 20, "b": 20, "c": 20})
    c.clock.now += 5.0
    await control.tick()
    assert c.sheds("a") == [10] and control.latest["balance"]["spread"] == 0.0


async def test_a_requested_rebalance_is_balanced_busy_or_started() -> None:
    c = Cluster(rebalance_interval=5.0, rebalance_min_mean=5.0, auto_rebalance=False)
    first, second = c.control("one"), c.control("two")
    await c.report({"a": 20, "b": 20})
    await first.tick()
    await second.tick()
    assert (await first.request_rebalance())[0] == "balanced"
    await c.report({"a": 30, "b": 30, "c": 0})
    await first.tick()
    await second.tick()
    outcome, facts = await first.request_rebalance()
    assert outcome == "started" and facts["plan"] == {"a": 10, "b": 10}, facts
    assert facts["nodes"] == {"a": 30, "b": 30, "c": 0} and facts["spread"] == 0.5
    assert (await second.request_rebalance())[0] == "busy"  # the round lease is held by `one`
    await first.stop()
    await second.stop()


# --- rebalancing against reports that predate the previous round (bugs) -----------------------------------


async def test_a_round_is_not_planned_again_from_reports_older_than_the_previous_rounds_orders() -> None:
    """One interval after a round, the view still holds the nodes' reports from before its orders
    (nodes report once a second, control reads them once a tick, both slower than a short
    interval). Planning from them orders the same connections to move a second time: here 40
    moves for the 20 that were needed. A round should wait for reports newer than the previous
    round's shed window."""
    c = Cluster(rebalance_interval=1.5, rebalance_min_mean=5.0, auto_rebalance=False)
    control = c.control("one")
    await c.report({"a": 30, "b": 30, "c": 0})
    await control.tick()
    assert await control.rebalance_round() == {"a": 10, "b": 10}
    c.clock.now += 1.5  # one interval later; no node has reported since the orders
    await control.tick()
    second = await control.rebalance_round()
    assert c.sheds("a") == [10] and c.sheds("b") == [10], (
        f"the second round ({second}) re-ordered the first round's sheds from the same pre-shed reports: "
        f"a {c.sheds('a')}, b {c.sheds('b')}"
    )


async def test_a_requested_rebalance_does_not_stop_on_reports_taken_while_clients_were_moving() -> None:
    """POST /admin/rebalance keeps going "until the spread is within bounds". Reports taken during
    the shed window miss the clients still reconnecting, and may look balanced: the campaign must
    not end on them. Here it ends, and when the moving clients have landed (22/25/13: 25 is over
    the bound of 24) nothing rebalances any more (automatic rebalancing is off)."""
    c = Cluster(rebalance_interval=0.05, rebalance_min_mean=5.0, auto_rebalance=False)
    control = c.control("one")
    await c.report({"a": 30, "b": 30, "c": 0})
    await control.tick()
    outcome, facts = await control.request_rebalance()
    assert outcome == "started" and facts["plan"] == {"a": 10, "b": 10}
    c.clock.now += 0.01  # within the shed window (interval / 2): 8 clients are between nodes
    await c.report({"a": 20, "b": 20, "c": 12})
    await control.tick()
    await asyncio.sleep(0.2)  # the campaign's next rounds (real time) see only these reports
    c.clock.now += 3.5  # the moving clients have landed, and every node has reported since
    await c.report({"a": 22, "b": 25, "c": 13})
    await control.tick()
    assert control.latest["balance"]["spread"] > control.settings.rebalance_ratio
    await asyncio.sleep(0.2)  # a campaign still running would now shed from b
    try:
        assert c.sheds("b")[1:], (
            "the requested rebalancing ended on reports taken while clients were moving; "
            f"now {control.view.nodes(c.clock())}, spread "
            f"{control.latest['balance']['spread']} > {control.settings.rebalance_ratio}"
        )
    finally:
        await control.stop()
