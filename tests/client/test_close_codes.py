"""What the client does when a real `herald dev` closes its connection, code by code (CONTRACT §5):
resume after 4008, stop on 1000/4003, a new token after 4001, surface 1009, back off harder on
1013/4029. Timing is observed through the injected clock, never by waiting it out."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from herald.client import (
    ClientClosed,
    ClientConfig,
    ConnectionLost,
    Disconnected,
    ErrorEvent,
    Forbidden,
    HeraldClient,
    Message,
    MessageTooBig,
    State,
    Unauthorized,
)
from tests.cluster.checker import eventually
from tests.conftest import make_token, seconds
from tests.e2e.server import HeraldProcess, start_herald

from .conftest import FakeClock, GateClock


async def api(server: HeraldProcess, method: str, path: str, body: object = None) -> object:
    status, reply = await asyncio.to_thread(server.api, method, path, body)
    assert status == 200, (path, status, reply)
    return reply


async def drain(client: HeraldClient) -> list[object]:
    """Every event of the client's own stream queued so far."""
    out = []
    while client.pending:
        out.append(await client.next_event())
    return out


async def test_slow_consumer_close_resumes_every_channel_without_loss_or_duplicate(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """Closed with 4008 while messages keep coming: the client waits one backoff delay (first
    rung: under 0.5 s), reconnects, resumes its channels and its personal channel with `since`,
    and the application gets every message once, in order — including what was published while it
    was away."""
    clock = GateClock()
    client = HeraldClient(herald.http, token=make_token("gina"), clock=clock)
    clients.append(client)
    await client.connect()
    sub = await client.subscribe("room:resume")
    before = [await api(herald, "POST", "/api/publish", {"channel": "room:resume", "data": i}) for i in range(5)]
    clock.hold()
    assert await api(herald, "POST", "/api/disconnect", {"user": "gina", "code": 4008}) == {"disconnected": 1}
    await eventually(lambda: clock.waiting == 1, 5, "the client to wait before reconnecting")
    away = [await api(herald, "POST", "/api/publish", {"channel": "room:resume", "data": i}) for i in range(5, 15)]
    await api(herald, "POST", "/notify", {"userId": "gina", "message": "while away"})
    clock.release()
    got = [await asyncio.wait_for(sub.next(), seconds(5)) for _ in range(15)]
    assert [m.offset for m in got] == [p["offset"] for p in [*before, *away]]  # type: ignore[index,union-attr]
    events = []
    async with asyncio.timeout(seconds(5)):
        while not any(isinstance(e, Message) for e in events):
            events.append(await client.next_event())
    note = next(e for e in events if isinstance(e, Message))
    assert (note.channel, note.event, note.data) == ("user:gina", "notification", "while away")
    assert any(isinstance(e, Disconnected) and e.code == 4008 and e.reconnect_in is not None for e in events)
    assert 0 <= clock.sleeps[0] < 0.5
    assert client.stats.connections == 2 and client.stats.resyncs == 0
    await api(herald, "POST", "/api/publish", {"channel": "room:resume", "data": "live"})
    assert (await asyncio.wait_for(sub.next(), seconds(5))).data == "live"  # type: ignore[union-attr]
    assert sub.pending == 0


@pytest.mark.parametrize("code", [1000, 4003])
async def test_final_close_codes_stop_the_client(herald: HeraldProcess, code: int) -> None:
    clock = FakeClock()
    user = f"final{code}"
    client = HeraldClient(herald.http, token=make_token(user), clock=clock)
    await client.connect()
    sub = await client.subscribe(f"room:{user}")
    await api(herald, "POST", "/api/disconnect", {"user": user, "code": code})
    with pytest.raises(ClientClosed) as closed:
        async with asyncio.timeout(seconds(5)):
            async for _ in sub:
                pass
    assert closed.value.code == code
    assert client.state is State.CLOSED and client.stats.connections == 1 and clock.sleeps == []
    assert [e for e in await drain(client) if isinstance(e, Disconnected)] == [
        Disconnected(code, "disconnected by the server", None)
    ]
    await client.close()


async def test_4001_asks_the_token_callback_and_reconnects(herald: HeraldProcess, clients: list[HeraldClient]) -> None:
    calls = []

    async def token() -> str:
        calls.append(1)
        return make_token("hank", jti=str(len(calls)))  # a new token each time

    client = HeraldClient(herald.http, token=token)
    clients.append(client)
    await client.connect()
    first = client.client_id
    await api(herald, "POST", "/api/disconnect", {"user": "hank", "code": 4001})
    await eventually(lambda: client.stats.connections == 2 and client.state is State.CONNECTED, 5, "a reconnect")
    assert len(calls) == 2 and client.client_id != first
    await client.ping()


async def test_4001_without_a_new_token_stops_with_unauthorized(herald: HeraldProcess) -> None:
    token = make_token("ivy")
    client = HeraldClient(herald.http, token=lambda: token)  # always the same token
    await client.connect()
    await api(herald, "POST", "/api/disconnect", {"user": "ivy", "code": 4001})
    with pytest.raises(Unauthorized):
        async with asyncio.timeout(seconds(5)):
            async for _ in client:
                pass
    assert client.stats.connections == 1
    await client.close()


async def test_a_resume_refused_for_good_ends_that_subscription_with_the_error(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """After a 4001 the callback's new token no longer allows room:*: the resume is refused with
    403, so that Subscription ends with Forbidden and an ErrorEvent names the channel; the client
    and its other channels go on."""
    tokens = iter([make_token("oscar", channels=["room:*", "news:*"]), make_token("oscar", channels=["news:*"])])
    client = HeraldClient(herald.http, token=lambda: next(tokens))
    clients.append(client)
    await client.connect()
    room, news = await client.subscribe("room:perm"), await client.subscribe("news:perm")
    await api(herald, "POST", "/api/disconnect", {"user": "oscar", "code": 4001})
    with pytest.raises(Forbidden) as refused:
        async with asyncio.timeout(seconds(5)):
            async for _ in room:
                pass
    assert refused.value.code == 403
    errors = [e for e in await drain(client) if isinstance(e, ErrorEvent)]
    assert [(e.channel, e.code) for e in errors] == [("room:perm", 403)]
    assert client.state is State.CONNECTED and "room:perm" not in client.positions
    await api(herald, "POST", "/api/publish", {"channel": "news:perm", "data": "still here"})
    assert (await asyncio.wait_for(news.next(), seconds(5))).data == "still here"  # type: ignore[union-attr]


async def test_expired_token_string_ends_with_4001_and_unauthorized(herald: HeraldProcess) -> None:
    client = HeraldClient(herald.http, token=make_token("jack", ttl=1.5))
    await client.connect()
    with pytest.raises(Unauthorized) as err:
        async with asyncio.timeout(seconds(6)):
            async for _ in client:
                pass
    assert "4001" in str(err.value) and isinstance(client.error, Unauthorized)
    await client.close()


async def test_refused_handshake_token_is_replaced_by_the_callback(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    tokens = iter([make_token("kim", secret="wrong-secret"), make_token("kim")])
    client = HeraldClient(herald.http, token=lambda: next(tokens), clock=FakeClock())
    clients.append(client)
    await client.connect()
    assert client.user == "kim" and client.stats.token_renewals == 1


async def test_close_1009_is_surfaced_and_the_client_reconnects(
    herald: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """A frame over the server's limit (the client was configured with a larger one): the server
    closes with 1009; the request fails, an ErrorEvent(MessageTooBig) says why, and the client
    comes back."""
    client = HeraldClient(
        herald.http, token=make_token("lee"), config=ClientConfig(max_message_size=1 << 20), clock=FakeClock()
    )
    clients.append(client)
    await client.connect()
    with pytest.raises(ConnectionLost) as lost:
        await client.publish("room:big", "x" * 100_000)
    assert lost.value.code == 1009
    events = []
    async with asyncio.timeout(seconds(5)):
        while not any(isinstance(e, ErrorEvent) for e in events):
            events.append(await client.next_event())
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert isinstance(error.error, MessageTooBig) and error.code == 1009
    await eventually(lambda: client.state is State.CONNECTED, 5, "the reconnect")
    await client.ping()


@pytest.fixture(scope="module")
def limited() -> Iterator[HeraldProcess]:
    server = start_herald("--max-connections", "2", "--max-connections-per-user", "1")
    yield server
    server.stop()


async def test_node_full_and_user_limit_back_off_from_a_higher_rung(
    limited: HeraldProcess, clients: list[HeraldClient]
) -> None:
    """4029 (too many connections for this user) and 1013 (node full) are "not at once": the
    delays start at the fourth rung (ceiling 4 s) and grow from there."""
    holder = HeraldClient(limited.http, token=make_token("mia"))
    clients.append(holder)
    await holder.connect()
    for user, code in (("mia", 4029), ("other", 1013)):
        clock = FakeClock()
        client = HeraldClient(limited.http, token=make_token(user), clock=clock, rng=random.Random(9))
        try:
            await client.connect(wait=False)
            await eventually(lambda: len(clock.sleeps) >= 3, 10, f"three attempts refused with {code}")
        finally:
            await client.close()
        replay = random.Random(9)
        assert clock.sleeps[:3] == [replay.random() * c for c in (4, 8, 16)], (code, clock.sleeps)
        assert client.stats.connections == 0
        if code == 4029:  # fill the node for the next round
            second = HeraldClient(limited.http, token=make_token("nia"))
            clients.append(second)
            await second.connect()
