"""Members fail or change under a steady publish load (~200 msg/s over 10 channels, clients on both
nodes): routers killed, nodes killed, routers added and removed. No acknowledged publish is lost,
none is delivered twice, per-channel order holds (DESIGN invariants 1 and 2)."""

from __future__ import annotations

import asyncio
import time

from .checker import (
    Publisher,
    ResumingClient,
    check_no_loss,
    eventually,
    running,
    steady_load,
    wait_delivered,
)
from .conftest import LEASE_SECONDS, Cluster

CHANNELS = [f"room:load{i}" for i in range(10)]
RATE = 200.0  # messages per second, all channels together
#: Failover budget on top of the lease: one ownership sync (lease/3) plus polling slack.
TAKEOVER_MARGIN = 1.0


def _clients(cluster: Cluster, n: int = 8) -> list[ResumingClient]:
    """n clients alternating between the nodes, each on half of the channels (every channel is
    watched by clients of both nodes)."""
    urls = [m.ws for m in cluster.nodes]
    return [
        ResumingClient(urls, f"load{i}", [c for j, c in enumerate(CHANNELS) if (i // 2 + j) % 2 == 0], start=i)
        for i in range(n)
    ]


def _endpoints(cluster: Cluster) -> list[str]:
    return [m.http for m in (*cluster.routers, *cluster.nodes)]


async def _stop_load(load: asyncio.Task[None]) -> None:
    if not load.done():
        load.cancel()
    await asyncio.gather(load, return_exceptions=True)


async def test_router_kill_9_under_load_loses_nothing(cluster: Cluster) -> None:
    """A router killed with SIGKILL mid-load (no lease release, unacknowledged log entries pending)
    is replaced by the surviving router within the lease time plus one ownership sync; the
    survivor claims the dead router's pending entries before reading new ones, so every client
    gets every acknowledged message once and in order."""
    victim, survivor = cluster.routers
    clients = _clients(cluster)
    async with running(clients), Publisher(_endpoints(cluster)) as pub:
        load = asyncio.create_task(steady_load(pub, CHANNELS, rate=RATE, duration=4.0))
        try:
            await eventually(lambda: pub.count >= 250 or load.done(), 10, "the load to get going")
            before = cluster.ownership()
            assert before and before[victim.id], before
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster.kill, victim)
            await cluster.wait_partitions_owned(timeout=15, routers=[survivor])
            takeover = time.monotonic() - killed_at
            await load
        finally:
            await _stop_load(load)
        published = pub.snapshot()
        assert not pub.unacked, pub.errors[:5]
        await wait_delivered(published, clients, timeout=20)
        reports = [check_no_loss(published, c) for c in clients]
    assert all(r["reconnects"] == 0 for r in reports), reports
    assert pub.count >= RATE * 4.0 * 0.95
    assert takeover <= LEASE_SECONDS + TAKEOVER_MARGIN, (
        f"the survivor took {takeover:.2f}s to own the dead router's partitions "
        f"(lease {LEASE_SECONDS}s + {TAKEOVER_MARGIN}s margin)"
    )


async def test_node_kill_9_under_load_clients_resume_on_the_other_node(cluster: Cluster) -> None:
    """A node killed with SIGKILL mid-load: its clients reconnect to the other node and resume
    every channel with `since` (recovered:true); together with the live stream they miss nothing
    and see nothing twice, while the other node's clients are not disturbed."""
    victim, survivor = cluster.nodes
    clients = _clients(cluster)
    async with running(clients), Publisher(_endpoints(cluster)) as pub:
        on_victim = [c for c in clients if c.node == victim.id]
        assert len(on_victim) == len(clients) // 2
        load = asyncio.create_task(steady_load(pub, CHANNELS, rate=RATE, duration=4.0))
        try:
            await eventually(lambda: pub.count >= 250 or load.done(), 10, "the load to get going")
            await asyncio.to_thread(cluster.kill, victim)
            await eventually(
                lambda: all(c.reconnects >= 1 and c.ready for c in on_victim),
                10,
                "the victim's clients to resume on the other node",
            )
            await load
        finally:
            await _stop_load(load)
        published = pub.snapshot()
        assert not pub.unacked, pub.errors[:5]
        await wait_delivered(published, clients, timeout=20)
        reports = [check_no_loss(published, c) for c in clients]
    for c in on_victim:
        assert c.node == survivor.id, c.summary()
        assert all(log.resumed >= 1 and log.recovered_false == 0 for log in c.logs.values()), c.summary()
    assert all(c.reconnects == 0 for c in clients if c not in on_victim), list(reports)


async def test_router_added_and_removed_under_load_keeps_order(cluster: Cluster) -> None:
    """Scale the routers out then in under load: a third router joins and takes over its share of
    the partitions (lease handoff: the old owner releases between two reads), then an original
    router is stopped with SIGTERM and releases its leases. Per-channel order holds and nothing is
    lost or duplicated through both handoffs."""
    first, second = cluster.routers
    clients = _clients(cluster)
    async with running(clients), Publisher([m.http for m in cluster.nodes]) as pub:
        load = asyncio.create_task(steady_load(pub, CHANNELS, rate=RATE, duration=6.0))
        try:
            await eventually(lambda: pub.count >= 150 or load.done(), 10, "the load to get going")
            third = await cluster.add_router_async()

            await cluster.wait_partitions_owned(timeout=10, routers=[first, second, third])
            assert cluster.ownership([third])[third.id], "the new router got no partition"
            assert not load.done(), "the load ended before the scale-in: make it longer"
            code = await cluster.terminate_async(first)
            assert code == 0, first.proc.output()[-2000:]
            await cluster.wait_partitions_owned(timeout=10, routers=[second, third])
            assert not load.done(), "the load ended before the handoffs were over: make it longer"
            await load
        finally:
            await _stop_load(load)
        published = pub.snapshot()
        assert not pub.unacked, pub.errors[:5]
        await wait_delivered(published, clients, timeout=20)
        reports = [check_no_loss(published, c) for c in clients]
    assert all(r["reconnects"] == 0 for r in reports), reports
    assert '"router.partition.released"' in first.proc.output()
