"""The SSE transport against a real `herald dev`: forced, as the fallback behind a proxy that
strips the WebSocket upgrade, resuming with a cursor built from the client's positions, and
refreshing its token by reopening the stream."""

from __future__ import annotations

import asyncio

import pytest

from herald.client import Disconnected, HeraldClient, Message, NotSupported, Resync, State
from herald.client.events import Position
from herald.core.protocol.envelope import Epoch, Offset
from tests.cluster.checker import eventually
from tests.conftest import make_token, seconds
from tests.e2e.server import HeraldProcess

from .conftest import GateClock
from .proxy import stripping_proxy


async def publish(server: HeraldProcess, channel: str, data: object) -> dict[str, str]:
    status, reply = await asyncio.to_thread(server.api, "POST", "/api/publish", {"channel": channel, "data": data})
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


async def take(sub_or_client: object, n: int, timeout: float = 5.0) -> list[object]:
    out = []
    async with asyncio.timeout(seconds(timeout)):
        while len(out) < n:
            out.append(await sub_or_client.next())  # type: ignore[attr-defined]
    return out


async def test_forced_sse_subscribes_receives_and_resumes_after_a_disconnect(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """Over SSE: adding a channel reopens the stream (nothing lost on the channels already
    there); after the server drops the stream the client reconnects with a Last-Event-ID built
    from its positions and gets exactly what it missed, on every channel."""
    clock = GateClock()
    client = HeraldClient(herald.http, token=make_token("sse1"), transport="sse", clock=clock)
    clients.append(client)
    await client.connect()
    assert client.transport == "sse" and client.client_id
    a = await client.subscribe("room:sse-a")
    first = await publish(herald, "room:sse-a", 0)
    assert [m.offset for m in await take(a, 1)] == [first["offset"]]  # type: ignore[attr-defined]
    b = await client.subscribe("room:sse-b")  # a second stream, resuming room:sse-a
    sent_a = [await publish(herald, "room:sse-a", i) for i in range(1, 4)]
    sent_b = [await publish(herald, "room:sse-b", i) for i in range(3)]
    assert [m.offset for m in await take(a, 3)] == [p["offset"] for p in sent_a]  # type: ignore[attr-defined]
    assert [m.offset for m in await take(b, 3)] == [p["offset"] for p in sent_b]  # type: ignore[attr-defined]

    clock.hold()
    status, _ = await asyncio.to_thread(herald.api, "POST", "/api/disconnect", {"user": "sse1", "code": 4008})
    assert status == 200
    await eventually(lambda: clock.waiting == 1, 5, "the client to be away")
    away_a = [await publish(herald, "room:sse-a", f"away{i}") for i in range(4)]
    away_b = [await publish(herald, "room:sse-b", f"away{i}") for i in range(2)]
    await asyncio.to_thread(herald.api, "POST", "/notify", {"userId": "sse1", "message": "note"})
    clock.release()
    assert [m.offset for m in await take(a, 4)] == [p["offset"] for p in away_a]  # type: ignore[attr-defined]
    assert [m.offset for m in await take(b, 2)] == [p["offset"] for p in away_b]  # type: ignore[attr-defined]
    events = []
    async with asyncio.timeout(seconds(5)):
        while not any(isinstance(e, Message) for e in events):
            events.append(await client.next_event())
    note = next(e for e in events if isinstance(e, Message))
    assert (note.channel, note.event, note.data) == ("user:sse1", "notification", "note")
    assert client.stats.duplicates == 0 and client.stats.resyncs == 0
    assert client.stats.connections == 4  # opened, reopened for each subscribe, reconnected
    assert a.pending == b.pending == 0
    with pytest.raises(NotSupported):
        await client.publish("room:sse-a", 1)


async def test_sse_stream_that_saw_no_message_yet_still_resumes_without_a_gap(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """The position of every channel comes with the stream's opening cursor, so a stream dropped
    before its first message resumes from there: what was published meanwhile arrives."""
    clock = GateClock()
    client = HeraldClient(herald.http, token=make_token("sse-quiet"), transport="sse", clock=clock)
    clients.append(client)
    await client.connect()
    sub = await client.subscribe("room:sse-quiet")
    await eventually(lambda: "room:sse-quiet" in client.positions, 5, "the opening cursor")
    clock.hold()
    status, _ = await asyncio.to_thread(herald.api, "POST", "/api/disconnect", {"user": "sse-quiet", "code": 4008})
    assert status == 200
    await eventually(lambda: clock.waiting == 1, 5, "the client to be away")
    away = await publish(herald, "room:sse-quiet", "while away")
    clock.release()
    assert [m.offset for m in await take(sub, 1)] == [away["offset"]]  # type: ignore[attr-defined]


async def test_sse_reports_a_gap_it_cannot_fill_with_a_resync(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    sent = [await publish(herald, "room:sse-gap", i) for i in range(3)]
    client = HeraldClient(herald.http, token=make_token("sse2"), transport="sse")
    clients.append(client)
    await client.connect()
    sub = await client.subscribe("room:sse-gap", since=Position(Offset(sent[0]["offset"]), Epoch("gone")))
    resync = (await take(sub, 1))[0]
    assert isinstance(resync, Resync) and resync.recovered is False
    assert (resync.epoch, resync.offset) == (sent[-1]["epoch"], sent[-1]["offset"])
    live = await publish(herald, "room:sse-gap", "live")
    assert [m.offset for m in await take(sub, 1)] == [live["offset"]]  # type: ignore[attr-defined]


async def test_websocket_refused_by_a_proxy_falls_back_to_sse(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """Behind a proxy that strips `Upgrade`, the WebSocket handshake gets a plain HTTP answer:
    the client switches to SSE through the same proxy and works, for good."""
    async with stripping_proxy(herald.http) as url:
        client = HeraldClient(url, token=make_token("fall"))
        clients.append(client)
        await client.connect()
        assert client.transport == "sse" and client.stats.fallbacks == 1
        sub = await client.subscribe("room:fallback")
        sent = [await publish(herald, "room:fallback", i) for i in range(5)]
        assert [m.offset for m in await take(sub, 5)] == [p["offset"] for p in sent]  # type: ignore[attr-defined]
        await client.close()


async def test_token_refresh_before_expiry_on_websocket_and_on_sse(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """Tokens live 4 s; the callback is asked again before expiry. The WebSocket client sends
    `refresh` and keeps its connection; the SSE client reopens its stream with the new token and
    resumes. Both outlive the first token with nothing lost."""
    calls = {"ws": 0, "sse": 0}

    def token_for(kind: str):
        async def get() -> str:
            calls[kind] += 1
            return make_token(f"refresh-{kind}", ttl=4)

        return get

    ws = HeraldClient(herald.http, token=token_for("ws"), transport="ws")
    sse = HeraldClient(herald.http, token=token_for("sse"), transport="sse")
    clients += [ws, sse]
    await asyncio.gather(ws.connect(), sse.connect())
    subs = await asyncio.gather(ws.subscribe("room:refresh"), sse.subscribe("room:refresh"))
    first_exp = asyncio.get_running_loop().time() + 4
    ws_client = ws.client_id
    await eventually(lambda: calls["ws"] >= 2 and calls["sse"] >= 2, 8, "a refresh on both")
    sent = []
    while asyncio.get_running_loop().time() < first_exp + 1.5:  # past the first token's expiry
        sent.append(await publish(herald, "room:refresh", len(sent)))
        await asyncio.sleep(0.1)
    for sub in subs:
        got = await take(sub, len(sent), timeout=5)
        assert [m.offset for m in got] == [p["offset"] for p in sent]  # type: ignore[attr-defined]
    assert ws.client_id == ws_client and ws.stats.connections == 1 and ws.state is State.CONNECTED
    assert sse.stats.connections >= 2 and sse.state is State.CONNECTED
    await ws.ping()
    assert not [e for e in [await ws.next_event() for _ in range(ws.pending)] if isinstance(e, Disconnected)]
