"""A Redis shard fails: restarted without persistence (its data is gone), restarted with an
always-fsynced AOF (nothing is gone), or down for a while. Clients are told exactly what was lost
(`recovered:false`, DESIGN invariant 3), never silently skipped; the rest of the cluster keeps
working and recovers on its own."""

from __future__ import annotations

import asyncio
from typing import Any

from .checker import Publisher, ResumingClient, check_no_loss, eventually, running, wait_delivered
from .conftest import Cluster

AOF = ("--appendonly", "yes", "--appendfsync", "always")
_ERROR_BODY_KEYS = {"code", "message"}


async def _batch(pub: Publisher, channels: list[str], tag: str, n: int = 5) -> None:
    async def one(ci: int, channel: str) -> None:
        for i in range(n):
            assert await pub.publish(channel, {"tag": tag, "ch": channel, "i": i}, via=ci + i) is not None, pub.errors

    await asyncio.gather(*(one(ci, ch) for ci, ch in enumerate(channels)))


async def _restart_shard_while_clients_are_away(cluster: Cluster, lost: int) -> dict[str, Any]:
    """Clients on both nodes watch 3 channels on each shard. Batch 1 is delivered; the server API
    disconnects every user with 4008 (reconnect and resume) and the clients stay away; batch 2 is
    published; shard `lost` is killed and restarted; the clients come back and resume with `since`;
    batch 3 is published. Returns what the test needs to judge the outcome."""
    kept = 1 - lost
    lost_channels = cluster.channels_on_shard(lost, "room:s-", 3)
    kept_channels = cluster.channels_on_shard(kept, "room:s-", 3)
    channels = lost_channels + kept_channels
    urls = [m.ws for m in cluster.nodes]
    clients = [ResumingClient(urls, f"shard{i}", channels, start=i) for i in range(4)]
    endpoints = [m.http for m in (*cluster.routers, *cluster.nodes)]
    async with running(clients), Publisher(endpoints) as pub:
        await _batch(pub, channels, "before")
        await wait_delivered(pub.snapshot(), clients)

        for c in clients:
            c.hold()
        for i, c in enumerate(clients):
            status, body = await cluster.routers[i % 2].aapi("POST", "/api/disconnect", {"user": c.user, "code": 4008})
            assert (status, body) == (200, {"disconnected": 1})
        await eventually(
            lambda: all(not c.ready and c.sessions[-1].close_code == 4008 for c in clients),
            10,
            "every client to be disconnected with 4008",
        )
        await _batch(pub, channels, "away")

        await asyncio.to_thread(cluster.kill_shard, lost)
        await asyncio.to_thread(cluster.start_shard, lost)
        await cluster.wait_ready([*cluster.routers, *cluster.nodes], timeout=15)
        for c in clients:
            c.release()
        await asyncio.gather(*(c.wait_ready(15) for c in clients))

        await _batch(pub, channels, "after")
        published = pub.snapshot()
        await wait_delivered(published, clients, timeout=20)
        reports = [check_no_loss(published, c) for c in clients]
    return {
        "clients": clients,
        "lost": lost_channels,
        "kept": kept_channels,
        "reports": reports,
        "published": published,
    }


async def test_redis_shard_restart_without_persistence_reports_not_recovered(cluster: Cluster) -> None:
    """A shard restarted without persistence lost the history of its partitions (and their epoch):
    clients resuming channels of that shard are told recovered:false (never a silent gap) and then
    receive every new message; channels of the other shard resume with recovered:true and every
    message published while the clients were away. Routers and nodes carry on by themselves."""
    out = await _restart_shard_while_clients_are_away(cluster, lost=0)
    for c in out["clients"]:
        for ch in out["lost"]:
            assert c.recovered_false(ch) == 1, (ch, c.summary(), c.logs[ch].resets)
        for ch in out["kept"]:
            assert c.recovered_false(ch) == 0, (ch, c.summary(), c.logs[ch].resets)
            away = [m for m in c.logs[ch].messages if m.data["tag"] == "away"]
            assert len(away) == 5, (ch, away)
        assert c.reconnects == 1 and c.sessions[0].close_code == 4008, c.summary()
    assert cluster.task_failures() == []


async def test_redis_shard_restart_with_aof_loses_nothing(cluster_factory: Any) -> None:
    """With appendfsync always, a shard killed with SIGKILL and restarted keeps every acknowledged
    publish, its epochs and the routers' consumer groups: every resume is recovered:true and every
    client receives every message exactly once, in order — including those published while it was
    away — and the cluster carries on by itself."""
    cluster: Cluster = cluster_factory(redis_args=AOF)
    out = await _restart_shard_while_clients_are_away(cluster, lost=0)
    for c in out["clients"]:
        assert all(log.recovered_false == 0 for log in c.logs.values()), c.summary()
        for ch in out["lost"] + out["kept"]:
            assert len([m for m in c.logs[ch].messages if m.data["tag"] == "away"]) == 5, ch
    assert cluster.task_failures() == []


async def test_redis_outage_publish_returns_503_and_clients_stay_connected(cluster: Cluster) -> None:
    """While a shard is down: publishing to a channel of that shard answers 503 with the contract's
    error body on routers and nodes alike (and publishes nothing), /readyz turns 503, connected
    WebSocket clients stay connected (ping → pong) and the other shard's channels still accept
    publishes. After the shard is back (empty), every component becomes ready again by itself,
    publishing works and the same connections receive new messages — no reconnect, no loss."""
    down = 1
    ch_down = cluster.channels_on_shard(down, "room:outage-", 1)[0]
    ch_up = cluster.channels_on_shard(1 - down, "room:outage-", 1)[0]
    members = [*cluster.routers, *cluster.nodes]
    urls = [m.ws for m in cluster.nodes]
    clients = [ResumingClient(urls, f"steady{i}", [ch_down, ch_up], start=i) for i in range(4)]
    async with running(clients), Publisher([m.http for m in members]) as pub:
        await _batch(pub, [ch_down, ch_up], "before", 3)
        await wait_delivered(pub.snapshot(), clients)

        await asyncio.to_thread(cluster.kill_shard, down)
        for m in members:
            status, body = await m.aapi("POST", "/api/publish", {"channel": ch_down, "data": "lost?"})
            assert status == 503, (m, status, body)
            assert isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == _ERROR_BODY_KEYS, body
            assert body["error"]["code"] == "engine_unavailable" and body["error"]["message"], body
        await cluster.wait_ready(members, ready=False, timeout=10)
        for c in clients:
            await c.ping()
        assert all(c.ready and c.reconnects == 0 for c in clients), [c.summary() for c in clients]
        assert await pub.publish(ch_up, {"tag": "during", "ch": ch_up, "i": 0}, via=0) is not None, pub.errors

        await asyncio.to_thread(cluster.start_shard, down)
        await cluster.wait_ready(members, timeout=15)
        await _batch(pub, [ch_down, ch_up], "after", 5)
        published = pub.snapshot()
        await wait_delivered(published, clients, timeout=15)
        reports = [check_no_loss(published, c) for c in clients]
        for c in clients:
            await c.ping()
    assert all(r["reconnects"] == 0 for r in reports), reports
    assert all(c.sessions[0].close_code is None or c.sessions[0].close_code == 1000 for c in clients)
    assert cluster.task_failures() == []


async def test_shard_data_loss_then_router_failover_still_reaches_connected_clients(cluster: Cluster) -> None:
    """A shard restarted without persistence also lost which nodes subscribe to its channels (the
    registry snapshot and the subscription records of its logs). When, after that, its partitions
    move to another router (the owner is killed), connected clients must still receive every new
    message — or be told (reconnect and recovered:false) — never be silently cut off."""
    down = 1
    owner, survivor = cluster.routers
    channels = cluster.channels_of_router(owner, "room:registry-", 3, shard=down)
    urls = [m.ws for m in cluster.nodes]
    clients = [ResumingClient(urls, f"reg{i}", channels, start=i) for i in range(4)]
    members = [*cluster.routers, *cluster.nodes]
    async with running(clients), Publisher([m.http for m in cluster.nodes]) as pub:
        await _batch(pub, channels, "before", 3)
        await wait_delivered(pub.snapshot(), clients)

        await asyncio.to_thread(cluster.kill_shard, down)
        await asyncio.to_thread(cluster.start_shard, down)
        await cluster.wait_ready(members, timeout=15)
        await asyncio.to_thread(cluster.kill, owner)  # its partitions move to the survivor
        await cluster.wait_partitions_owned(timeout=15, routers=[survivor])

        await _batch(pub, channels, "after", 5)
        published = pub.snapshot()
        await wait_delivered(published, clients, timeout=10)
        for c in clients:
            check_no_loss(published, c)
