"""The client SDK against a real cluster (2 redis-server shards, 2 routers, 2 nodes, all
subprocesses) while a publisher keeps publishing through the server API: a node killed with
SIGKILL, a node drained with SIGTERM, a Redis shard restarted without persistence. Every client
is judged by tests/cluster/checker.py from what its application received: every acknowledged
message after it subscribed, once, in offset order — except what a Resync (recovered=False)
reported as lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from herald.client import Disconnected, HeraldClient
from tests.cluster.checker import Publisher, check_no_loss, eventually, steady_load, wait_delivered
from tests.cluster.conftest import Cluster, Member
from tests.conftest import make_token

from .conftest import GateClock
from .recorder import Recorder

RATE = 100.0  # messages per second over all channels


@contextlib.asynccontextmanager
async def recorders(
    urls: Sequence[str], names: Sequence[str], channels: Sequence[str], clock: GateClock | None = None
) -> AsyncIterator[list[Recorder]]:
    recs = [Recorder(HeraldClient(urls, token=make_token(name), clock=clock), name) for name in names]
    try:
        for rec in recs:
            await rec.client.connect()
            for channel in channels:
                await rec.subscribe(channel)
        yield recs
    finally:
        await asyncio.gather(*(rec.stop() for rec in recs), return_exceptions=True)


def endpoints(cluster: Cluster) -> list[str]:
    return [m.http for m in (*cluster.routers, *cluster.nodes)]


async def until_count(pub: Publisher, load: asyncio.Task[None], n: int) -> None:
    await eventually(lambda: pub.count >= n or load.done(), 10, f"{n} acknowledged publishes")
    assert not load.done(), "the load ended too early: make it longer"


def on_node(recs: Sequence[Recorder], node: Member) -> list[Recorder]:
    return [r for r in recs if r.client.node == node.id]


async def test_node_kill_9_clients_resume_on_the_other_node_with_nothing_lost(cluster: Cluster) -> None:
    """Clients listing both nodes start on the victim; it is killed with SIGKILL mid-load (TCP
    reset, no close frame: 1006). They reconnect to the survivor and resume every channel with
    `since` (recovered), dropping what they already had."""
    victim, survivor = cluster.nodes
    channels = [f"room:kill{i}" for i in range(4)]
    async with (
        recorders([victim.http, survivor.http], ["kill-a", "kill-b"], channels) as recs,
        Publisher(endpoints(cluster)) as pub,
    ):
        assert on_node(recs, victim) == recs
        load = asyncio.create_task(steady_load(pub, channels, rate=RATE, duration=3.0))
        await until_count(pub, load, 80)
        await asyncio.to_thread(cluster.kill, victim)
        await eventually(lambda: on_node(recs, survivor) == recs, 10, "the clients to move to the survivor")
        await load
        published = pub.snapshot()
        assert not pub.unacked, pub.errors[:5]
        await wait_delivered(published, recs, timeout=20)
        reports = [check_no_loss(published, rec) for rec in recs]
    for rec, report in zip(recs, reports, strict=True):
        assert report["reconnects"] == 1 and rec.resyncs == [], rec.summary()
        assert report["messages"] == sum(len(p) for p in published.values())
        assert rec.client.stats.delays[0] < 0.5  # first rung of the backoff


async def test_node_drain_clients_follow_the_advisory_to_the_other_node(cluster: Cluster) -> None:
    """SIGTERM: the node sends `reconnect` (after_ms) and closes with 1012 within its drain
    window; each client waits after_ms plus jitter, goes to the next node and resumes."""
    victim, survivor = cluster.nodes
    channels = [f"room:drain{i}" for i in range(4)]
    async with (
        recorders([victim.http, survivor.http], ["drain-a", "drain-b"], channels) as recs,
        Publisher(endpoints(cluster)) as pub,
    ):
        load = asyncio.create_task(steady_load(pub, channels, rate=RATE, duration=3.5))
        await until_count(pub, load, 80)
        code = await cluster.terminate_async(victim)
        assert code == 0, victim.proc.output()[-2000:]
        await eventually(lambda: on_node(recs, survivor) == recs, 10, "the clients to move to the survivor")
        await load
        published = pub.snapshot()
        assert not pub.unacked, pub.errors[:5]
        await wait_delivered(published, recs, timeout=20)
        reports = [check_no_loss(published, rec) for rec in recs]
        events = [[await rec.client.next_event() for _ in range(rec.client.pending)] for rec in recs]
    for rec, report, evs in zip(recs, reports, events, strict=True):
        assert report["reconnects"] == 1 and rec.resyncs == [], rec.summary()
        closes = [e for e in evs if isinstance(e, Disconnected)]
        assert [e.code for e in closes] == [1012], evs
        advised, delay = closes[0].advised_ms, closes[0].reconnect_in
        assert advised is not None and delay is not None, closes
        assert advised / 1000 <= delay < advised / 1000 + 0.5  # after_ms plus up to 0.5 s of jitter


async def test_redis_restart_without_persistence_is_surfaced_as_resync(cluster: Cluster) -> None:
    """Clients are kept away (their reconnect sleep is held) while a shard is killed and restarted
    with no persistence, and the publisher keeps going. Back, they resume: channels of the lost
    shard get one Resync (recovered=False) before the new messages, the other shard's channels
    resume whole; nothing else is missing or doubled."""
    lost_channels = cluster.channels_on_shard(0, "room:redis-", 2)
    kept_channels = cluster.channels_on_shard(1, "room:redis-", 2)
    channels = lost_channels + kept_channels
    clock = GateClock()
    urls = [m.http for m in cluster.nodes]
    async with recorders(urls, ["redis-a", "redis-b"], channels, clock) as recs, Publisher(endpoints(cluster)) as pub:
        load = asyncio.create_task(steady_load(pub, channels, rate=RATE, duration=5.0))
        await until_count(pub, load, 60)
        clock.hold()
        for rec in recs:
            status, _ = await cluster.routers[0].aapi("POST", "/api/disconnect", {"user": rec.name, "code": 4008})
            assert status == 200
        await eventually(lambda: clock.waiting == len(recs), 10, "every client to be away")
        count = pub.count
        await eventually(lambda: pub.count >= count + 30, 10, "publishes while the clients are away")
        await asyncio.to_thread(cluster.kill_shard, 0)
        await asyncio.to_thread(cluster.start_shard, 0)
        await cluster.wait_ready([*cluster.routers, *cluster.nodes], timeout=15)
        count = pub.count
        await eventually(lambda: pub.count >= count + 20, 10, "publishes after the restart")
        assert not load.done(), "the load ended before the clients came back: make it longer"
        clock.release()
        await load
        published = pub.snapshot()
        await wait_delivered(published, recs, timeout=20)
        reports = [check_no_loss(published, rec, unacked=pub.unacked) for rec in recs]
    for rec, report in zip(recs, reports, strict=True):
        assert report["reconnects"] >= 1, rec.summary()
        assert sorted(r.channel for r in rec.resyncs) == sorted(lost_channels), rec.resyncs
        assert all(r.recovered is False and r.reason == "not_recovered" for r in rec.resyncs)
        assert all(rec.logs[ch].recovered_false == 0 for ch in kept_channels)
