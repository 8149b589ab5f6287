"""Resume (DESIGN invariant 2): a client that drops and comes back with its last position gets
exactly the messages it missed, in order, then live ones — over WebSocket and SSE."""

from __future__ import annotations

import asyncio

from tests.conftest import make_token
from tests.e2e.clients import SseClient, WsClient
from tests.e2e.server import HeraldProcess


async def publish(server: HeraldProcess, channel: str, data: object) -> dict:
    status, body = await asyncio.to_thread(server.api, "POST", "/api/publish", {"channel": channel, "data": data})
    assert status == 200, body
    return body


async def test_ws_resume_with_since_gets_exactly_the_missed_messages(herald: HeraldProcess) -> None:
    """Kill the client mid-stream, publish more, reconnect with `since`: the gap, then live."""
    ch = "news:resume-ws"
    client = await WsClient.open(herald.ws, "reader")
    reply, _ = await client.request({"type": "subscribe", "channel": ch})
    assert reply["type"] == "subscribed"
    for i in range(5):
        await publish(herald, ch, i)
    got = await client.messages(5, ch)
    last = got[-1]
    client.conn.transport.abort()  # the client dies without a close handshake

    for i in range(5, 12):
        await publish(herald, ch, i)
    again = await WsClient.open(herald.ws, "reader")
    reply, _ = await again.request(
        {"type": "subscribe", "channel": ch, "since": {"offset": last["offset"], "epoch": last["epoch"]}}
    )
    assert (reply["type"], reply["recovered"], reply["missed"]) == ("subscribed", True, 7)
    missed = await again.messages(7, ch)
    assert [m["data"] for m in missed] == list(range(5, 12))
    await publish(herald, ch, 12)
    assert [m["data"] for m in await again.messages(1, ch)] == [12]
    await again.close()


async def test_ws_resume_with_wrong_epoch_is_not_recovered(herald: HeraldProcess) -> None:
    """A position from a lost history is reported as not recovered, never silently accepted."""
    ch = "news:resume-epoch"
    body = await publish(herald, ch, "x")
    client = await WsClient.open(herald.ws, "reader2")
    reply, _ = await client.request(
        {"type": "subscribe", "channel": ch, "since": {"offset": body["offset"], "epoch": "stale"}}
    )
    assert (reply["recovered"], reply["missed"], reply["epoch"]) == (False, 0, body["epoch"])
    await client.close()


async def test_personal_channel_resumes_like_any_other(herald: HeraldProcess) -> None:
    """Notifications sent while a user was away are recovered by resubscribing its personal channel."""
    client = await WsClient.open(herald.ws, "carol")
    status, _ = await asyncio.to_thread(herald.api, "POST", "/notify", {"userId": "carol", "message": "n1"})
    assert status == 200
    first = (await client.messages(1, "user:carol"))[0]
    assert (first["event"], first["data"]) == ("notification", "n1")
    await client.close()
    for n in ("n2", "n3"):
        await asyncio.to_thread(herald.api, "POST", "/notify", {"userId": "carol", "message": n})
    again = await WsClient.open(herald.ws, "carol")
    reply, _ = await again.request(
        {"type": "subscribe", "channel": "user:carol", "since": {"offset": first["offset"], "epoch": first["epoch"]}}
    )
    assert reply["missed"] == 2
    assert [m["data"] for m in await again.messages(2, "user:carol")] == ["n2", "n3"]
    await again.close()


async def test_sse_resume_with_last_event_id_gets_exactly_the_missed_messages(herald: HeraldProcess) -> None:
    """SSE: reconnecting with the last event id resumes every channel of the stream."""
    token = make_token("sse-reader")
    path = f"/events?channel=news:sse-a&channel=news:sse-b&token={token}"
    sse = await SseClient.open(herald.http, path)
    assert sse.status == 200
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.headers["cache-control"] == "no-cache" and sse.headers["x-accel-buffering"] == "no"
    for i in range(3):
        await publish(herald, "news:sse-a", f"a{i}")
        await publish(herald, "news:sse-b", f"b{i}")
    got = await sse.messages(6)
    assert [m["data"] for m in got] == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert sse.retry is not None and sse.last_id
    last_id = sse.last_id
    sse.close()

    for i in range(3, 6):
        await publish(herald, "news:sse-b", f"b{i}")
        await publish(herald, "news:sse-a", f"a{i}")
    again = await SseClient.open(herald.http, path, {"Last-Event-ID": last_id})
    missed = await again.messages(6)
    assert sorted(m["data"] for m in missed) == sorted(["a3", "a4", "a5", "b3", "b4", "b5"])
    assert [m["data"] for m in missed if m["channel"] == "news:sse-a"] == ["a3", "a4", "a5"]
    await publish(herald, "news:sse-a", "live")
    assert [m["data"] for m in await again.messages(1)] == ["live"]
    again.close()


async def test_sse_resume_via_query_parameter_and_recovery_event(herald: HeraldProcess) -> None:
    """`lastEventId` in the query works like the header; an unfillable gap sends `event: recovery`."""
    token = make_token("sse-q")
    body = await publish(herald, "news:sse-q", "q0")
    stale = f"{'a' * 8}.stale.{body['offset']}"
    from herald.core.protocol.sse import channel_tag

    cursor = f"{channel_tag('news:sse-q')}.stale.{body['offset']}"
    sse = await SseClient.open(herald.http, f"/events?channel=news:sse-q&token={token}&lastEventId={cursor}")
    ev = await sse.event()
    assert ev["event"] == "recovery"
    assert ev["data"] == {"type": "recovery", "recovered": False, "channels": ["news:sse-q"]}
    sse.close()
    assert stale  # a well-formed cursor for an unknown channel is simply ignored
    ok = await SseClient.open(herald.http, f"/events?channel=news:sse-q&token={token}&lastEventId={stale}")
    await publish(herald, "news:sse-q", "q1")
    assert [m["data"] for m in await ok.messages(1)] == ["q1"]
    ok.close()
