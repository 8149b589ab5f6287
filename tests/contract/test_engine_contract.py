"""The Engine contract (core/engine/base.py), run against every engine implementation."""

from __future__ import annotations

import asyncio

import pytest

from herald.core.engine.base import PresenceEntry
from herald.core.engine.redis import RedisEngine
from herald.core.protocol.envelope import Disconnect, Order, Position, Publication, Signal, offset_key

from .conftest import EngineUnderTest


async def collector(eut: EngineUnderTest, node: str = "n1") -> list:
    got: list = []
    await eut.engine.attach(node, got.extend)
    return got


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_publish_returns_increasing_offsets_and_one_epoch(eut: EngineUnderTest) -> None:
    """Offsets of one channel strictly increase; the epoch stays the same while nothing is lost."""
    results = [await eut.engine.publish("room:a", {"n": i}) for i in range(20)]
    keys = [offset_key(r.offset) for r in results]
    assert keys == sorted(keys) and len(set(keys)) == 20
    assert len({r.epoch for r in results}) == 1
    assert all(r.channel == "room:a" for r in results)


async def test_history_returns_messages_in_order_with_latest_offset(eut: EngineUnderTest) -> None:
    """history() without since returns the retained messages oldest first and the top offset."""
    results = [await eut.engine.publish("room:h", i, event="e", sender="alice") for i in range(5)]
    hist = await eut.engine.history("room:h")
    assert [m.data for m in hist.messages] == [0, 1, 2, 3, 4]
    assert hist.offset == results[-1].offset and hist.epoch == results[-1].epoch
    first = hist.messages[0]
    assert (first.channel, first.event, first.sender) == ("room:h", "e", "alice")
    limited = await eut.engine.history("room:h", limit=2)
    assert [m.data for m in limited.messages] == [3, 4]


async def test_history_since_returns_exactly_the_missed_messages(eut: EngineUnderTest) -> None:
    """A client resuming from offset O with the right epoch gets every later message, recovered."""
    results = [await eut.engine.publish("room:s", i) for i in range(10)]
    since = Position(results[3].offset, results[3].epoch)
    hist = await eut.engine.history("room:s", since=since)
    assert hist.recovered is True
    assert [m.data for m in hist.messages] == [4, 5, 6, 7, 8, 9]
    assert (await eut.engine.history("room:s", since=since, limit=2)).messages[-1].data == 5


async def test_resume_from_latest_offset_is_recovered_with_nothing_missed(eut: EngineUnderTest) -> None:
    """Resuming from the newest offset is complete and empty."""
    last = [await eut.engine.publish("room:t", i) for i in range(3)][-1]
    hist = await eut.engine.history("room:t", since=Position(last.offset, last.epoch))
    assert hist.recovered is True and hist.messages == []


async def test_resume_after_epoch_change_reports_not_recovered(eut: EngineUnderTest) -> None:
    """A position from another epoch cannot be trusted: recovered is False and nothing is returned."""
    r = await eut.engine.publish("room:e", 1)
    await eut.engine.publish("room:e", 2)
    hist = await eut.engine.history("room:e", since=Position(r.offset, "other-epoch"))
    assert hist.recovered is False and hist.messages == []


async def test_resume_past_retention_size_reports_not_recovered(eut: EngineUnderTest) -> None:
    """When retention dropped messages after `since`, the gap is reported, never silently skipped."""
    results = [await eut.engine.publish("small:x", i) for i in range(6)]  # keeps 3
    lost = await eut.engine.history("small:x", since=Position(results[0].offset, results[0].epoch))
    assert lost.recovered is False
    ok = await eut.engine.history("small:x", since=Position(results[2].offset, results[2].epoch))
    assert ok.recovered is True and [m.data for m in ok.messages] == [3, 4, 5]


async def test_resume_past_retention_time_reports_not_recovered(eut: EngineUnderTest) -> None:
    """Messages older than the namespace TTL are gone, and a resume from before them says so."""
    first = await eut.engine.publish("small:ttl", 1)
    await eut.wait(5.0)
    await eut.engine.publish("small:ttl", 2)
    await eut.wait(6.0)  # the first is past the 10 s TTL, the second is not yet
    partial = await eut.engine.history("small:ttl", since=Position(first.offset, first.epoch))
    assert partial.recovered is True and [m.data for m in partial.messages] == [2]
    await eut.wait(5.0)  # now both are gone
    hist = await eut.engine.history("small:ttl", since=Position(first.offset, first.epoch))
    assert hist.recovered is False and hist.messages == []
    # an expired channel starts again from nothing, with offsets still increasing
    again = await eut.engine.publish("small:ttl", 2)
    assert offset_key(again.offset) > offset_key(first.offset)


async def test_channel_without_history_still_reports_positions(eut: EngineUnderTest) -> None:
    """history_size 0: publishes get offsets, nothing is retained, and resume reports the gap."""
    a = await eut.engine.publish("none:x", 1)
    b = await eut.engine.publish("none:x", 2)
    hist = await eut.engine.history("none:x", since=Position(a.offset, a.epoch))
    assert hist.offset == b.offset and hist.messages == [] and hist.recovered is False


async def test_resume_with_offset_from_the_future_is_not_recovered(eut: EngineUnderTest) -> None:
    """An offset the engine never issued is not trusted."""
    r = await eut.engine.publish("room:f", 1)
    hist = await eut.engine.history("room:f", since=Position("99999999999999-0", r.epoch))
    assert hist.recovered is False


async def test_unknown_channel_history_is_empty(eut: EngineUnderTest) -> None:
    hist = await eut.engine.history("room:never")
    assert hist.messages == [] and hist.offset == "0-0"


async def test_idempotency_key_publishes_once_and_returns_the_first_result(eut: EngineUnderTest) -> None:
    """The same idempotency key within the window returns the first result and adds nothing."""
    got = await collector(eut)
    await eut.engine.subscribe("n1", "room:i")
    first = await eut.engine.publish("room:i", "a", idempotency_key="k1")
    second = await eut.engine.publish("room:i", "b", idempotency_key="k1")
    assert second == first
    assert [m.data for m in (await eut.engine.history("room:i")).messages] == ["a"]
    await wait_for(lambda: len(got) >= 1)
    assert [p.data for p in got if isinstance(p, Publication)] == ["a"]
    await eut.wait(eut.idempotency_window + 1)
    third = await eut.engine.publish("room:i", "c", idempotency_key="k1")
    assert third.offset != first.offset


async def test_publications_reach_subscribed_nodes_in_order_and_only_them(eut: EngineUnderTest) -> None:
    """A node registered for a channel receives its publications in offset order; others do not."""
    got1, got2 = await collector(eut, "n1"), await collector(eut, "n2")
    await eut.engine.subscribe("n1", "room:d")
    await eut.engine.subscribe("n1", "room:d")  # idempotent
    results = [await eut.engine.publish("room:d", i) for i in range(50)]
    await wait_for(lambda: len(got1) >= 50)
    assert [p.offset for p in got1] == [r.offset for r in results]
    assert got2 == []
    await eut.engine.unsubscribe("n1", "room:d")
    await eut.engine.publish("room:d", "after")
    await eut.engine.publish("room:other", "x")
    assert all(p.data != "after" for p in got1)


async def test_signals_reach_subscribers_without_history(eut: EngineUnderTest) -> None:
    """Ephemeral frames are delivered live and never stored."""
    got = await collector(eut)
    await eut.engine.subscribe("n1", "room:sig")
    await eut.engine.signal("room:sig", {"type": "user_status", "userId": "a", "status": "away"})
    await wait_for(lambda: len(got) == 1)
    assert isinstance(got[0], Signal) and got[0].frame["status"] == "away"
    assert (await eut.engine.history("room:sig")).messages == []


async def test_presence_add_list_remove(eut: EngineUnderTest) -> None:
    """Presence lists the clients added to a channel, with their latest status, until removed."""
    e = eut.engine
    await e.presence_add("room:p", PresenceEntry("c1", "alice", "n1", "online", {"name": "A"}))
    await e.presence_add("room:p", PresenceEntry("c2", "bob", "n1"))
    await e.presence_add("room:p", PresenceEntry("c1", "alice", "n1", "away", {"name": "A"}))
    entries = {p.client: p for p in await e.presence("room:p")}
    assert set(entries) == {"c1", "c2"} and entries["c1"].status == "away" and entries["c1"].info == {"name": "A"}
    await e.presence_remove("room:p", "c1")
    await e.presence_remove("room:p", "c1")
    assert [p.client for p in await e.presence("room:p")] == ["c2"]


async def test_per_user_connection_limit_is_enforced_and_released(eut: EngineUnderTest) -> None:
    """user_acquire refuses past the limit, counts a client once, and frees on release."""
    e = eut.engine
    assert await e.user_acquire("u", "c1", 2) and await e.user_acquire("u", "c2", 2)
    assert await e.user_acquire("u", "c1", 2)  # the same client again
    assert not await e.user_acquire("u", "c3", 2)
    await e.user_release("u", "c1")
    assert await e.user_acquire("u", "c3", 2)


async def test_disconnect_user_reaches_every_node_and_counts_connections(eut: EngineUnderTest) -> None:
    """disconnect_user tells every node holding the user and returns its connection count."""
    got1, got2 = await collector(eut, "n1"), await collector(eut, "n2")
    e = eut.engine
    await e.subscribe("n1", "user:mallory")  # nodes hold the personal channel of their users
    await e.subscribe("n2", "user:mallory")
    await e.user_acquire("mallory", "c1", 10)
    await e.user_acquire("mallory", "c2", 10)
    assert await e.disconnect_user("mallory", 4003) == 2
    await wait_for(lambda: got1 and got2)
    assert got1 == [Disconnect("mallory", 4003)] == got2


async def test_detach_stops_deliveries(eut: EngineUnderTest) -> None:
    got = await collector(eut)
    await eut.engine.subscribe("n1", "room:det")
    eut.engine.detach("n1")
    await eut.engine.publish("room:det", 1)
    assert got == []


@pytest.mark.parametrize("rounds", [200])
async def test_register_then_read_history_never_loses_a_concurrent_publish(eut: EngineUnderTest, rounds: int) -> None:
    """DESIGN invariant 5 at the engine level: subscribe, then history, then live — with a
    concurrent publisher — yields every offset exactly once."""
    e = eut.engine
    for r in range(rounds):
        channel = f"room:race{r}"
        live: list[Publication] = []
        await e.attach(f"race{r}", lambda items, live=live: live.extend(i for i in items if isinstance(i, Publication)))
        published = [await e.publish(channel, -1)]

        async def publisher() -> list:
            out = []
            for i in range(5):
                out.append(await e.publish(channel, i))
                await asyncio.sleep(0)
            return out

        task = asyncio.ensure_future(publisher())
        await asyncio.sleep(0)
        await e.subscribe(f"race{r}", channel)
        hist = await e.history(channel, since=Position(published[0].offset, published[0].epoch))
        published += await task
        final = published[-1].offset
        await wait_for(lambda: final in {m.offset for m in hist.messages} | {p.offset for p in live})
        seen = [m.offset for m in hist.messages]
        last = offset_key(seen[-1]) if seen else offset_key(published[0].offset)
        seen += [p.offset for p in live if offset_key(p.offset) > last]
        assert seen == [p.offset for p in published[1:]]
        e.detach(f"race{r}")


async def test_presence_and_user_counts_survive_a_refresh_and_expire_without_one(eut: EngineUnderTest) -> None:
    """Entries a process registered are re-asserted by its refresh; they are what keeps them alive."""
    e = eut.engine
    await e.presence_add("room:refresh", PresenceEntry("c1", "u1", "n1"))
    assert await e.user_acquire("u1", "c1", 1)
    refresh = getattr(e, "_refresh", None)
    if refresh is not None:  # RedisEngine: one pipelined pass must keep everything in place
        await refresh()
    assert [p.client for p in await e.presence("room:refresh")] == ["c1"]
    assert not await e.user_acquire("u1", "c2", 1)


async def test_publish_batch_publishes_each_message_in_order(eut: EngineUnderTest) -> None:
    """publish_batch: one result per request, in order; offsets increase per channel; the
    idempotency key works as for publish; subscribers receive them in offset order."""
    from herald.core.engine.base import PublishRequest

    got = await collector(eut)
    await eut.engine.subscribe("n1", "room:batch-a")
    requests = [PublishRequest("room:batch-a" if i % 2 else "room:batch-b", i) for i in range(20)]
    requests.append(PublishRequest("room:batch-a", "once", idempotency_key="bk"))
    requests.append(PublishRequest("room:batch-a", "again", idempotency_key="bk"))
    results = await eut.engine.publish_batch(requests)
    assert len(results) == 22 and all(not isinstance(r, Exception) for r in results)
    assert results[-1] == results[-2]
    a_offsets = [r.offset for q, r in zip(requests, results, strict=True) if q.channel == "room:batch-a"][:-1]
    assert [offset_key(o) for o in a_offsets] == sorted({offset_key(o) for o in a_offsets})
    hist = await eut.engine.history("room:batch-a")
    assert [m.data for m in hist.messages] == [i for i in range(20) if i % 2] + ["once"]
    await wait_for(lambda: len([p for p in got if isinstance(p, Publication)]) >= 11)
    assert [p.offset for p in got if isinstance(p, Publication)] == [m.offset for m in hist.messages]


# --- membership and control ---------------------------------------------------------------------
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
        {"type": "leave", "channel": "jl:room", "client": "c1", "user": "alice"}]
    if isinstance(e, RedisEngine):  # one process per node: its connection counts go with it
        assert removed["connections"] == 1
        assert await e.user_acquire("alice", "c9", 1)
    await e.publish("jl:room", "after")
    await e.publish("room:only-n1", "after")
    await wait_for(lambda: any(isinstance(d, Publication) for d in alive))
    assert [d.data for d in alive if isinstance(d, Publication)] == ["after"]
    assert not any(isinstance(d, Publication) for d in dead)
