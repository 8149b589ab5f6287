"""SSE over the cluster path, and `herald dev --redis` (node + router in one process)."""

from __future__ import annotations

import asyncio
import json

from herald.core.engine.redis.keys import hist_key
from herald.core.hashing import partition_of
from tests.cluster.conftest import Cluster
from tests.conftest import make_token
from tests.e2e.clients import SseClient, WsClient
from tests.e2e.server import start_herald
from tests.redis_server import start_redis


async def test_sse_stream_resumes_on_another_node_with_last_event_id(cluster: Cluster) -> None:
    """An SSE client that drops from node A and reconnects to node B with its Last-Event-ID gets
    exactly the messages it missed on every channel of the stream, then live ones."""
    node_a, node_b = cluster.live_nodes[:2]
    token = make_token("sse-roamer")
    path = f"/events?channel=news:roam-a&channel=news:roam-b&token={token}"
    first = await SseClient.open(node_a.http, path)
    assert first.status == 200
    for i in range(3):
        for ch in ("news:roam-a", "news:roam-b"):
            status, _ = await node_a.aapi("POST", "/api/publish", {"channel": ch, "data": f"{ch}:{i}"})
            assert status == 200
    assert len(await first.messages(6, timeout=10)) == 6
    last_id = first.last_id
    first.close()
    for i in range(3, 6):
        for ch in ("news:roam-b", "news:roam-a"):
            await node_b.aapi("POST", "/api/publish", {"channel": ch, "data": f"{ch}:{i}"})
    second = await SseClient.open(node_b.http, path, {"Last-Event-ID": last_id or ""})
    missed = await second.messages(6, timeout=10)
    for ch in ("news:roam-a", "news:roam-b"):
        assert [m["data"] for m in missed if m["channel"] == ch] == [f"{ch}:{i}" for i in range(3, 6)]
    await node_a.aapi("POST", "/api/publish", {"channel": "news:roam-a", "data": "live"})
    assert [m["data"] for m in await second.messages(1, timeout=10)] == ["live"]
    second.close()


async def test_dev_with_redis_runs_node_and_router_in_one_process() -> None:
    """`herald dev --redis URL` delivers through Redis with no separate router process."""
    redis = start_redis()
    server = start_herald("--redis", redis.url, "--partitions", "4")
    try:
        client = await WsClient.open(server.ws, "solo")
        reply, _ = await client.request({"type": "subscribe", "channel": "news:dev-redis"})
        assert reply["type"] == "subscribed"
        status, body = await asyncio.to_thread(
            server.api, "POST", "/api/publish", {"channel": "news:dev-redis", "data": 1}
        )
        assert status == 200
        msg = (await client.messages(1, "news:dev-redis", timeout=10))[0]
        assert msg["offset"] == body["offset"]
        _, info = await asyncio.to_thread(server.api, "GET", "/api/info")
        assert info["engine"] == "redis" and len(info["routers"]) == 1 and len(info["nodes"]) == 1
        assert redis.client().exists(hist_key(partition_of("news:dev-redis", 4), "news:dev-redis"))
        await client.close()
    finally:
        server.stop()
        redis.stop()


async def test_sse_while_a_shard_is_down_answers_503_json_and_recovers(cluster: Cluster) -> None:
    """An SSE stream that needs an unreachable shard is refused with the contract's 503 JSON body
    (never a half-open stream); once the shard is back the same request streams."""
    node = cluster.live_nodes[0]
    channel = cluster.channels_on_shard(1, "news:down-", 1)[0]
    path = f"/events?channel={channel}&token={make_token('sse-down')}"
    cluster.kill_shard(1)
    refused = await SseClient.open(node.http, path)
    assert refused.status == 503
    body = json.loads(await refused.body())
    assert body["error"]["code"] == "engine_unavailable" and body["error"]["message"]
    refused.close()
    cluster.start_shard(1)
    async with asyncio.timeout(20):
        while True:
            stream = await SseClient.open(node.http, path)
            if stream.status == 200:
                break
            stream.close()
            await asyncio.sleep(0.2)
    # the first request after a restart may still meet a dead pooled connection (503): retry once
    status, body = await node.aapi("POST", "/api/publish", {"channel": channel, "data": "back"})
    if status == 503:
        status, body = await node.aapi("POST", "/api/publish", {"channel": channel, "data": "back"})
    assert status == 200, body
    assert [m["data"] for m in await stream.messages(1, timeout=10)] == ["back"]
    stream.close()
