"""The server HTTP API (CONTRACT §7) against a real `herald dev`, observed by real clients."""

from __future__ import annotations

import asyncio

import msgpack
import websockets

from tests.conftest import make_token, seconds
from tests.e2e.clients import WsClient
from tests.e2e.server import HeraldProcess


async def api(server: HeraldProcess, method: str, path: str, body: object = None) -> tuple[int, dict]:
    return await asyncio.to_thread(server.api, method, path, body)


async def test_publish_reaches_subscribers_and_returns_offset_and_epoch(herald: HeraldProcess) -> None:
    """POST /api/publish → {channel, offset, epoch}; subscribers get the §4 envelope."""
    client = await WsClient.open(herald.ws, "api-sub")
    await client.request({"type": "subscribe", "channel": "news:api"})
    status, body = await api(
        herald, "POST", "/api/publish", {"channel": "news:api", "data": {"k": [1, 2]}, "event": "update"}
    )
    assert status == 200 and set(body) == {"channel", "offset", "epoch"}
    msg = (await client.messages(1, "news:api"))[0]
    assert msg == {
        "type": "message",
        "channel": "news:api",
        "offset": body["offset"],
        "epoch": body["epoch"],
        "event": "update",
        "data": {"k": [1, 2]},
        "ts": msg["ts"],
    }
    assert "from" not in msg and isinstance(msg["ts"], int)
    await client.close()


async def test_idempotency_key_publishes_once(herald: HeraldProcess) -> None:
    """The same idempotency_key returns the first result and publishes nothing more."""
    client = await WsClient.open(herald.ws, "idem")
    await client.request({"type": "subscribe", "channel": "news:idem"})
    req = {"channel": "news:idem", "data": "once", "idempotency_key": "order-42"}
    s1, b1 = await api(herald, "POST", "/api/publish", req)
    s2, b2 = await api(herald, "POST", "/api/publish", req)
    assert s1 == s2 == 200 and b1 == b2
    _, hist = await api(herald, "GET", "/api/history/news:idem")
    assert [m["data"] for m in hist["messages"]] == ["once"]
    await client.close()


async def test_broadcast_publishes_to_every_channel(herald: HeraldProcess) -> None:
    status, body = await api(herald, "POST", "/api/broadcast", {"channels": ["news:b1", "news:b2"], "data": 7})
    assert status == 200 and [r["channel"] for r in body["results"]] == ["news:b1", "news:b2"]
    for ch in ("news:b1", "news:b2"):
        _, hist = await api(herald, "GET", f"/api/history/{ch}")
        assert [m["data"] for m in hist["messages"]] == [7]


async def test_history_api_pages_with_since_and_limit(herald: HeraldProcess) -> None:
    offsets = [(await api(herald, "POST", "/api/publish", {"channel": "news:hist", "data": i}))[1] for i in range(6)]
    o = offsets[1]
    status, body = await api(herald, "GET", f"/api/history/news:hist?since={o['offset']}&epoch={o['epoch']}&limit=3")
    assert status == 200 and body["recovered"] is True
    assert [m["data"] for m in body["messages"]] == [2, 3, 4]
    assert body["offset"] == offsets[-1]["offset"] and body["epoch"] == o["epoch"]
    _, stale = await api(herald, "GET", f"/api/history/news:hist?since={o['offset']}&epoch=nope")
    assert stale["recovered"] is False and stale["messages"] == []


async def test_presence_and_stats_list_connected_subscribers(herald: HeraldProcess) -> None:
    a1 = await WsClient.open(herald.ws, "pa")
    a2 = await WsClient.open(herald.ws, "pa")
    b = await WsClient.open(herald.ws, "pb")
    for c in (a1, a2, b):
        await c.request({"type": "subscribe", "channel": "room:pres"})
    _, body = await api(herald, "GET", "/api/presence/room:pres")
    assert sorted(e["user"] for e in body["clients"]) == ["pa", "pa", "pb"]
    assert all(set(e) == {"client", "user", "status", "info", "node"} for e in body["clients"])
    _, stats = await api(herald, "GET", "/api/presence/room:pres/stats")
    assert stats == {"channel": "room:pres", "clients": 3, "users": 2}
    await b.close()
    async with asyncio.timeout(seconds(5)):
        while (await api(herald, "GET", "/api/presence/room:pres/stats"))[1]["clients"] != 2:
            await asyncio.sleep(0.01)
    await a1.close()
    await a2.close()


async def test_disconnect_closes_every_connection_of_the_user(herald: HeraldProcess) -> None:
    """POST /api/disconnect → every connection of the user closes with 4003 (or the given code)."""
    conns = [await WsClient.open(herald.ws, "evicted") for _ in range(3)]
    other = await WsClient.open(herald.ws, "stays")
    status, body = await api(herald, "POST", "/api/disconnect", {"user": "evicted"})
    assert status == 200 and body == {"disconnected": 3}
    for c in conns:
        async with asyncio.timeout(seconds(5)):
            await c.conn.wait_closed()
        assert c.conn.close_code == 4003
    reply, _ = await other.request({"type": "ping"})
    assert reply["type"] == "pong"
    await other.close()


async def test_notify_delivers_a_notification_to_the_user(herald: HeraldProcess) -> None:
    client = await WsClient.open(herald.ws, "notified")
    status, body = await api(herald, "POST", "/notify", {"userId": "notified", "message": {"title": "hi"}})
    assert (status, body) == (200, {"sent": True})
    msg = (await client.messages(1, "user:notified"))[0]
    assert (msg["event"], msg["data"]) == ("notification", {"title": "hi"})
    await client.close()


async def test_info_describes_the_deployment(herald: HeraldProcess) -> None:
    status, body = await api(herald, "GET", "/api/info")
    assert status == 200 and {"nodes", "routers", "partitions", "version"} <= set(body)


async def test_ops_endpoints(herald: HeraldProcess) -> None:
    """/healthz and /readyz answer 200; /metrics is Prometheus text with Herald's series."""
    for path in ("/healthz", "/readyz"):
        status, _ = await api(herald, "GET", path)
        assert status == 200
    status, text = await api(herald, "GET", "/metrics")
    assert status == 200 and "herald_connections" in text and "herald_delivery_latency_seconds_bucket" in text


async def test_msgpack_subprotocol_round_trip(herald: HeraldProcess) -> None:
    """herald.msgpack: binary frames both ways with the same keys as JSON."""
    url = f"{herald.ws}?token={make_token('mp')}"
    async with websockets.connect(url, subprotocols=["herald.msgpack"]) as ws:
        assert ws.subprotocol == "herald.msgpack"
        connected = msgpack.unpackb(await ws.recv())
        assert connected["type"] == "connected" and connected["user"] == "mp"
        await ws.send(msgpack.packb({"type": "subscribe", "channel": "news:mp", "id": 1}))
        assert msgpack.unpackb(await ws.recv())["type"] == "subscribed"
        _, body = await api(herald, "POST", "/api/publish", {"channel": "news:mp", "data": {"b": True}})
        msg = msgpack.unpackb(await ws.recv())
        assert (msg["type"], msg["offset"], msg["data"]) == ("message", body["offset"], {"b": True})


async def test_batch_publish_returns_a_result_per_message_in_order(herald: HeraldProcess) -> None:
    """POST /api/publish/batch (extension): every message published and delivered in order."""
    client = await WsClient.open(herald.ws, "batcher")
    await client.request({"type": "subscribe", "channel": "news:batch"})
    messages = [{"channel": "news:batch", "data": i} for i in range(5)] + [{"channel": "news:other", "data": "x"}]
    status, body = await api(herald, "POST", "/api/publish/batch", {"messages": messages})
    assert status == 200 and [r["channel"] for r in body["results"]] == ["news:batch"] * 5 + ["news:other"]
    got = await client.messages(5, "news:batch")
    assert [m["data"] for m in got] == [0, 1, 2, 3, 4]
    assert [m["offset"] for m in got] == [r["offset"] for r in body["results"][:5]]
    bad, err = await api(herald, "POST", "/api/publish/batch", {"messages": [{"channel": "bad name", "data": 1}]})
    assert bad == 400 and err["error"]["code"] == "bad_request"
    await client.close()
