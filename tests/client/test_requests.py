"""The client against a real `herald dev`: subscribe, publish, chat, presence, who, history and
typed errors, over both WebSocket subprotocols."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from herald.client import (
    BadRequest,
    ClientClosed,
    Forbidden,
    HeraldClient,
    Join,
    Message,
    PayloadTooBig,
    Resync,
    ServerError,
    UserStatus,
)
from herald.client.events import Position
from herald.core.protocol.envelope import Epoch, Offset
from tests.conftest import make_token, seconds
from tests.e2e.server import HeraldProcess

pytestmark = pytest.mark.parametrize("codec", ["json", "msgpack"])


async def events_until(client: HeraldClient, done: Callable[[object], bool], timeout: float = 5.0) -> list[object]:
    """Events of the client's own stream up to the first one for which `done` is true."""
    out: list[object] = []
    async with asyncio.timeout(seconds(timeout)):
        while not out or not done(out[-1]):
            out.append(await client.next_event())
    return out


async def test_subscribe_publish_and_receive_in_order_with_history(
    herald: HeraldProcess, codec: str, clients: list[HeraldClient]
) -> None:
    """A subscriber gets what a publisher sends, once and in order; history has the same messages."""
    channel = f"room:pubsub-{codec}"
    alice = HeraldClient(herald.http, token=make_token("alice"), codec=codec)
    bob = HeraldClient(herald.ws, token=make_token("bob"), codec=codec)  # a ws:// URL works as well
    clients += [alice, bob]
    await asyncio.gather(alice.connect(), bob.connect())
    assert (alice.transport, alice.user, bob.user) == ("ws", "alice", "bob")
    sub = await bob.subscribe(channel)
    assert sub.subscribed is not None and sub.subscribed.recovered is False
    acks = [await alice.publish(channel, {"i": i, "blob": b"x".hex()}, event="tick") for i in range(20)]
    got = [await asyncio.wait_for(sub.next(), seconds(5)) for _ in acks]
    assert all(isinstance(m, Message) for m in got)
    messages = [m for m in got if isinstance(m, Message)]
    assert [m.offset for m in messages] == [a.offset for a in acks]
    assert [(m.data["i"], m.event, m.sender) for m in messages] == [(i, "tick", "alice") for i in range(20)]
    page = await bob.history(channel, limit=5)
    assert [m.offset for m in page.messages] == [a.offset for a in acks[-5:]]
    since = messages[9].position
    rest = await bob.history(channel, since=since)
    assert rest.recovered and [m.data["i"] for m in rest.messages] == list(range(10, 20))
    assert sub.pending == 0 and alice.stats.duplicates == bob.stats.duplicates == 0


async def test_chat_presence_status_and_who(herald: HeraldProcess, codec: str, clients: list[HeraldClient]) -> None:
    """chat lands on the recipient's personal channel (the client's own stream); a status change
    reaches the user's own personal channel; who lists both subscribers of a channel."""
    channel = f"room:who-{codec}"
    carol = HeraldClient(herald.http, token=make_token("carol"), codec=codec)
    dave = HeraldClient(herald.http, token=make_token("dave"), codec=codec)
    clients += [carol, dave]
    await asyncio.gather(carol.connect(), dave.connect())
    await carol.subscribe(channel, queue=False)
    await dave.subscribe(channel)
    sent = await carol.chat("dave", "hello dave")
    chat = (await events_until(dave, lambda e: isinstance(e, Message)))[-1]
    assert isinstance(chat, Message)
    assert (chat.channel, chat.event, chat.sender, chat.data, chat.offset) == (
        "user:dave",
        "chat",
        "carol",
        {"text": "hello dave"},
        sent.offset,
    )
    inbox = await dave.subscribe("user:dave")  # the personal channel can have a Subscription too
    again = await carol.chat("dave", "second")
    second = await asyncio.wait_for(inbox.next(), seconds(5))
    assert isinstance(second, Message) and (second.offset, second.data) == (again.offset, {"text": "second"})
    await inbox.unsubscribe()  # ends the Subscription; the server keeps the personal channel
    assert "user:dave" in dave.positions
    await carol.set_status("away")
    seen = await events_until(carol, lambda e: isinstance(e, UserStatus) and e.channel == "user:carol")
    assert UserStatus("carol", "away", channel) in seen  # and through the channel she is in
    who = await dave.who(channel)
    assert who.users == {"carol", "dave"}
    assert {c.status for c in who.clients if c.user == "carol"} == {"away"}
    joins = {(e.channel, e.user) for e in seen if isinstance(e, Join)}
    assert joins <= {(channel, "carol"), (channel, "dave")}  # join signals, when the namespace sends them


async def test_error_replies_raise_typed_errors_and_the_connection_stays(
    herald: HeraldProcess, codec: str, clients: list[HeraldClient]
) -> None:
    client = HeraldClient(herald.http, token=make_token("erin", channels=["room:*"], publish=["room:ok"]), codec=codec)
    clients.append(client)
    await client.connect()
    with pytest.raises(Forbidden) as forbidden:
        await client.subscribe("news:secret")
    assert forbidden.value.code == 403 and isinstance(forbidden.value, ServerError)
    with pytest.raises(Forbidden):
        await client.publish("room:not-mine", 1)
    with pytest.raises(BadRequest) as bad:
        await client.publish("room:ok", 1, event="")  # the server validates the event name
    assert bad.value.code == 400
    with pytest.raises(BadRequest):
        await client.subscribe("no spaces allowed")  # checked before sending
    with pytest.raises(PayloadTooBig) as big:
        await client.publish("room:ok", "x" * 70_000)  # over the frame limit: never sent
    assert big.value.code == 413
    assert (await client.publish("room:ok", {"still": "open"})).channel == "room:ok"
    assert client.stats.connections == 1
    assert "news:secret" not in client.positions


async def test_resume_from_a_saved_position_reports_a_gap_it_cannot_fill(
    herald: HeraldProcess, codec: str, clients: list[HeraldClient]
) -> None:
    """`subscribe(since=...)` from a saved position resumes exactly; a position of another epoch
    cannot be filled and the subscription starts with a Resync event."""
    channel = f"room:saved-{codec}"
    pub = HeraldClient(herald.http, token=make_token("pub"), codec=codec)
    clients.append(pub)
    await pub.connect()
    acks = [await pub.publish(channel, i) for i in range(6)]
    epoch = (await pub.history(channel)).epoch
    resumer = HeraldClient(herald.http, token=make_token("res"), codec=codec)
    clients.append(resumer)
    await resumer.connect()
    sub = await resumer.subscribe(channel, since=Position(Offset(acks[2].offset), Epoch(epoch)))
    assert sub.subscribed is not None and sub.subscribed.recovered and sub.subscribed.missed == 3
    assert [(await sub.next()).data for _ in range(3)] == [3, 4, 5]  # type: ignore[union-attr]
    other = HeraldClient(herald.http, token=make_token("res2"), codec=codec)
    clients.append(other)
    await other.connect()
    stale = await other.subscribe(channel, since=Position(Offset(acks[2].offset), Epoch("lostepoch")))
    first = await asyncio.wait_for(stale.next(), seconds(5))
    assert isinstance(first, Resync) and first.recovered is False
    assert (first.previous, first.epoch, first.offset) == (
        Position(Offset(acks[2].offset), Epoch("lostepoch")),
        epoch,
        acks[-1].offset,
    )
    live = await pub.publish(channel, "after")
    nxt = await asyncio.wait_for(stale.next(), seconds(5))
    assert isinstance(nxt, Message) and nxt.offset == live.offset


async def test_unsubscribe_ends_the_iterator_and_close_ends_everything(herald: HeraldProcess, codec: str) -> None:
    channel = f"room:unsub-{codec}"
    client = HeraldClient(herald.http, token=make_token("frank"), codec=codec)
    await client.connect()
    sub = await client.subscribe(channel)
    assert await client.subscribe(channel) is sub  # subscribing twice returns the same subscription
    await sub.unsubscribe()
    assert [m async for m in sub] == []
    assert channel not in client.positions
    await client.close()
    assert [e async for e in client]  # the events queued before the close are still readable
    with pytest.raises(ClientClosed):
        await client.publish("room:x", 1)
