"""The Broker role (core/engine/base.py), run against every engine: offsets, history, resume,
idempotency, deliveries to subscribed nodes, signals, publish batches."""

from __future__ import annotations

import asyncio

import pytest

from herald.core.engine.base import PublishRequest
from herald.core.protocol.envelope import Position, Publication, Signal, offset_key

from .conftest import EngineUnderTest
from .support import collector, wait_for


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


async def test_publish_batch_publishes_each_message_in_order(eut: EngineUnderTest) -> None:
    """publish_batch: one result per request, in order; offsets increase per channel; the
    idempotency key works as for publish; subscribers receive them in offset order."""

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
