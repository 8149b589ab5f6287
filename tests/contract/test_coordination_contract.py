"""The Coordination role (core/engine/base.py), run against every engine: membership, leases,
orders, and the cleanup of a dead node."""

from __future__ import annotations

from herald.core.engine.base import PresenceEntry
from herald.core.engine.redis import RedisEngine
from herald.core.protocol.envelope import Order, Publication, Signal

from .conftest import EngineUnderTest
from .support import collector, wait_for


async def test_heartbeats_list_members_with_their_latest_status(eut: EngineUnderTest) -> None:
    """heartbeat() registers a member with its status; mark_member replaces the status without
    refreshing the heartbeat; forget_member removes it."""
    e = eut.engine
    await e.heartbeat("node:n1", {"state": "ready", "connections": {"ws": 1}})
    await e.heartbeat("router:r1", {"state": "ready", "partitions": [0, 1]})
    await e.heartbeat("node:n1", {"state": "draining", "connections": {"ws": 0}})
    members = await e.members()
    assert set(members) >= {"node:n1", "router:r1"}
    seen, status = members["node:n1"]
    assert status == {"state": "draining", "connections": {"ws": 0}} and seen > 0
    await e.mark_member("node:n1", {"state": "dead"})
    again = await e.members()
    assert again["node:n1"] == (seen, {"state": "dead"})
    await e.forget_member("node:n1")
    assert "node:n1" not in await e.members() and "router:r1" in await e.members()


async def test_alive_lists_the_members_of_a_role_seen_within_the_window(eut: EngineUnderTest) -> None:
    """alive(role, within): ids of that role only, sorted; a member silent for longer is left out."""
    e = eut.engine
    await e.heartbeat("router:r2", {})
    await e.heartbeat("router:r1", {})
    await e.heartbeat("node:n1", {})
    routers = await e.alive("router", 60.0)
    assert routers == sorted(routers) and {"r1", "r2"} <= set(routers)
    assert await e.alive("node", 60.0) == ["n1"]
    await eut.wait(10.0)  # memory: the clock moves 10 s; redis: 1 s passes
    await e.heartbeat("node:n2", {})
    assert await e.alive("node", 5.0 * (0.1 if isinstance(e, RedisEngine) else 1.0)) == ["n2"]


async def test_a_lease_has_one_holder_until_released_or_expired(eut: EngineUnderTest) -> None:
    e = eut.engine
    assert await e.hold_lease("leader", "a", 0.3)
    assert await e.hold_lease("leader", "a", 0.3)  # renewing
    assert not await e.hold_lease("leader", "b", 0.3)
    await e.release_lease("leader", "b")  # not the holder: no effect
    assert not await e.hold_lease("leader", "b", 0.3)
    await e.release_lease("leader", "a")
    assert await e.hold_lease("leader", "b", 0.3)
    await eut.wait(5.0)  # memory: the clock moves 5 s; redis: 0.5 s pass
    assert await e.hold_lease("leader", "c", 0.3)


async def test_orders_reach_the_node_they_are_for(eut: EngineUnderTest) -> None:
    got1, got2 = await collector(eut, "n1"), await collector(eut, "n2")
    await eut.engine.order("n2", Order("shed", {"count": 3, "window": 1.5}))
    await wait_for(lambda: got2)
    assert got2 == [Order("shed", {"count": 3, "window": 1.5})] and got1 == []


async def test_cleanup_of_a_dead_node_removes_what_it_registered(eut: EngineUnderTest) -> None:
    """cleanup_node drops the node's subscriptions (it gets no more deliveries), its presence
    entries (with `leave` for join/leave namespaces), and — where the engine spans processes —
    its users' connection counts; other nodes keep theirs."""
    e = eut.engine
    dead, alive = await collector(eut, "n1"), await collector(eut, "n2")
    for node in ("n1", "n2"):
        await e.subscribe(node, "jl:room")
    await e.subscribe("n1", "room:only-n1")
    await e.presence_add("jl:room", PresenceEntry("c1", "alice", "n1"))
    await e.presence_add("jl:room", PresenceEntry("c2", "bob", "n2"))
    assert await e.user_acquire("alice", "c1", 1)
    if isinstance(e, RedisEngine):
        await e.flush_index()
    removed = await e.cleanup_node("n1")
    assert removed["subscriptions"] == 2 and removed["presence"] == 1
    assert [p.client for p in await e.presence("jl:room")] == ["c2"]
    await wait_for(lambda: any(isinstance(d, Signal) for d in alive))
    assert [d.frame for d in alive if isinstance(d, Signal)] == [
        {"type": "leave", "channel": "jl:room", "client": "c1", "user": "alice"}
    ]
    if isinstance(e, RedisEngine):  # one process per node: its connection counts go with it
        assert removed["connections"] == 1
        assert await e.user_acquire("alice", "c9", 1)
    await e.publish("jl:room", "after")
    await e.publish("room:only-n1", "after")
    await wait_for(lambda: any(isinstance(d, Publication) for d in alive))
    assert [d.data for d in alive if isinstance(d, Publication)] == ["after"]
    assert not any(isinstance(d, Publication) for d in dead)
