"""A healthy cluster (2 Redis shards, 2 routers, 2 nodes): delivery, resume, presence, chat and
per-user limits work across nodes exactly as on one node."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import make_token, seconds
from tests.e2e.clients import WsClient

from .checker import Publisher, ResumingClient, check_no_loss, eventually_async, running, wait_delivered
from .conftest import Cluster


async def test_messages_to_users_channels_and_broadcasts_arrive_once_in_order_across_nodes(cluster: Cluster) -> None:
    """Invariant 1 across a cluster: 20 clients spread over both nodes receive every message of
    their personal channel (POST /notify and /api/publish to user:<id>), of shared channels and of
    /api/broadcast — published through both routers' and both nodes' API — exactly once, in offset
    order, with the data that was acknowledged."""
    urls = [n.ws for n in cluster.nodes]
    users = [f"u{i:02d}" for i in range(20)]
    shared = {"room:lobby": users, "news:feed": users, "room:even": users[0::2], "room:odd": users[1::2]}
    clients = [
        ResumingClient(urls, u, [c for c, members in shared.items() if u in members], start=i)
        for i, u in enumerate(users)
    ]
    endpoints = [r.http for r in cluster.routers] + [n.http for n in cluster.nodes]
    async with running(clients), Publisher(endpoints) as pub:
        assert {c.node for c in clients} == {n.id for n in cluster.nodes}

        async def to_user(i: int, user: str) -> None:
            for k in range(4):  # alternate /notify and /api/publish, rotating over the 4 endpoints
                if k % 2:
                    await pub.notify(user, {"to": user, "k": k}, via=i + k)
                else:
                    await pub.publish(f"user:{user}", {"to": user, "k": k}, via=i + k)

        async def to_channel(ci: int, channel: str) -> None:
            for k in range(20):
                await pub.publish(channel, {"ch": channel, "k": k}, via=ci + k)

        async def broadcasts() -> None:
            for k in range(6):
                await pub.broadcast(list(shared), {"broadcast": k}, via=k)

        await asyncio.gather(
            *(to_user(i, u) for i, u in enumerate(users)),
            *(to_channel(ci, ch) for ci, ch in enumerate(shared)),
            broadcasts(),
        )
        await pub.resolve()
        assert pub.retries == 0, pub.errors
        published = pub.snapshot()
        assert sum(map(len, published.values())) == 20 * 4 + 4 * 20 + 6 * 4
        await wait_delivered(published, clients, timeout=15)
        reports = [check_no_loss(published, c) for c in clients]
    assert [c.reconnects for c in clients] == [0] * len(clients)
    assert sum(r["messages"] for r in reports) == 20 * 4 + (20 + 20 + 10 + 10) * (20 + 6)


async def _api_publish(member: Any, channel: str, data: Any) -> dict[str, Any]:
    status, body = await member.aapi("POST", "/api/publish", {"channel": channel, "data": data})
    assert status == 200, body
    return body


async def _no_more_messages(client: WsClient) -> list[dict[str, Any]]:
    """Frames that arrive before the reply to a ping (i.e. everything already on its way)."""
    _, before = await client.request({"type": "ping"})
    return [f for f in before if f.get("type") == "message"]


async def test_resume_across_nodes(cluster: Cluster) -> None:
    """Invariant 2 across nodes: a client subscribed on node A that drops, while messages are
    published through routers and nodes, resubscribes on node B with its last offset/epoch and gets
    exactly the missed messages (recovered:true, missed:n), in order, then live ones — for a shared
    channel and for its personal channel alike."""
    a, b = cluster.nodes
    r1, r2 = cluster.routers
    ch = "room:resume"
    first = await WsClient.open(a.ws, "reader")
    assert first.connected["node"] == a.id
    reply, _ = await first.request({"type": "subscribe", "channel": ch})
    assert reply["recovered"] is False and reply["type"] == "subscribed"
    sent = [await _api_publish(r1, ch, i) for i in range(5)]
    got = await first.messages(5, ch)
    assert [(m["offset"], m["data"]) for m in got] == [(s["offset"], i) for i, s in enumerate(sent)]
    status, _ = await r2.aapi("POST", "/notify", {"userId": "reader", "message": "n0"})
    assert status == 200
    personal = (await first.messages(1, "user:reader"))[0]
    first.conn.transport.abort()  # the client dies without a close handshake

    missed = [await _api_publish((r2, b, a, r1)[i % 4], ch, 5 + i) for i in range(7)]
    for i in range(3):
        status, _ = await (r1, a, b)[i].aapi("POST", "/notify", {"userId": "reader", "message": f"n{i + 1}"})
        assert status == 200

    again = await WsClient.open(b.ws, "reader")
    assert again.connected["node"] == b.id
    reply, before = await again.request(
        {"type": "subscribe", "channel": ch, "since": {"offset": got[-1]["offset"], "epoch": got[-1]["epoch"]}}
    )
    assert (reply["recovered"], reply["missed"], reply["offset"]) == (True, 7, missed[-1]["offset"])
    assert not [f for f in before if f.get("channel") == ch]
    resumed = await again.messages(7, ch)
    assert [(m["offset"], m["data"]) for m in resumed] == [(s["offset"], 5 + i) for i, s in enumerate(missed)]

    reply, _ = await again.request(
        {
            "type": "subscribe",
            "channel": "user:reader",
            "since": {"offset": personal["offset"], "epoch": personal["epoch"]},
        }
    )
    assert (reply["recovered"], reply["missed"]) == (True, 3)
    notes = await again.messages(3, "user:reader")
    assert [(m["event"], m["data"]) for m in notes] == [("notification", f"n{i}") for i in (1, 2, 3)]

    live = await _api_publish(a, ch, 12)
    (m,) = await again.messages(1, ch)
    assert (m["offset"], m["data"]) == (live["offset"], 12)
    assert await _no_more_messages(again) == []  # nothing twice
    await again.close()


async def _open_refused(url: str, user: str) -> tuple[int | None, list[Any]]:
    """Open a connection that the server is expected to close at once: (close code, frames)."""
    conn = await websockets.connect(
        f"{url}?token={make_token(user)}", subprotocols=["herald.json"], open_timeout=seconds(5), ping_interval=None
    )
    frames = []
    try:
        async with asyncio.timeout(seconds(5)):
            while True:
                frames.append(json.loads(await conn.recv()))
    except ConnectionClosed:
        pass
    except TimeoutError:
        await conn.close()
        raise AssertionError(f"{user} on {url} was not closed; frames {frames}") from None
    return conn.close_code, frames


async def test_presence_who_disconnect_and_chat_cross_nodes(cluster_factory: Any) -> None:
    """Presence, chat, the disconnect API and the per-user connection limit are cluster-wide:
    `who` and /api/presence list the clients of both nodes; chat from a client on node A reaches
    its recipient on node B (and back); /api/disconnect closes the user's connections on both nodes
    with 4003; with --max-connections-per-user 2, a third connection of a user already connected on
    A and B is closed with 4029 on either node, and a released slot is usable from the other node."""
    cluster: Cluster = cluster_factory(node_args=("--max-connections-per-user", "2"))
    a, b = cluster.nodes
    router = cluster.routers[0]
    ch = "room:meet"
    alice = await WsClient.open(a.ws, "alice", info={"name": "Alice"})
    bob = await WsClient.open(b.ws, "bob")
    for c in (alice, bob):
        reply, _ = await c.request({"type": "subscribe", "channel": ch})
        assert reply["type"] == "subscribed"

    # who / presence: both nodes' clients, with their node
    expected = {("alice", a.id, alice.connected["client"]), ("bob", b.id, bob.connected["client"])}
    who: dict[str, Any] = {}

    async def who_lists_both() -> bool:
        nonlocal who
        who, _ = await bob.request({"type": "who", "channel": ch})
        return {(e["user"], e["node"], e["client"]) for e in who["clients"]} == expected

    await eventually_async(who_lists_both, 5, "`who` to list the clients of both nodes")
    assert {e["user"]: e["info"] for e in who["clients"]}["alice"] == {"name": "Alice"}
    for member in (router, a, b):
        status, body = await member.aapi("GET", f"/api/presence/{ch}")
        assert status == 200 and {(e["user"], e["node"], e["client"]) for e in body["clients"]} == expected, body
        status, body = await member.aapi("GET", f"/api/presence/{ch}/stats")
        assert (status, body) == (200, {"channel": ch, "clients": 2, "users": 2})

    # chat both ways across nodes
    reply, _ = await alice.request({"type": "chat", "recipientId": "bob", "text": "hi bob"})
    assert reply["type"] == "sent"
    (m,) = await bob.messages(1, "user:bob")
    assert (m["event"], m["from"], m["data"], m["offset"]) == ("chat", "alice", {"text": "hi bob"}, reply["offset"])
    reply, _ = await bob.request({"type": "chat", "recipientId": "alice", "text": "hi alice"})
    (m,) = await alice.messages(1, "user:alice")
    assert (m["event"], m["from"], m["data"], m["offset"]) == ("chat", "bob", {"text": "hi alice"}, reply["offset"])

    # bob leaves: presence follows on every node
    await bob.close()

    async def only_alice() -> bool:
        status, body = await a.aapi("GET", f"/api/presence/{ch}")
        return status == 200 and [e["user"] for e in body["clients"]] == ["alice"]

    await eventually_async(only_alice, 5, "bob to leave the presence of room:meet")

    # the disconnect API reaches both nodes
    dave_a = await WsClient.open(a.ws, "dave")
    dave_b = await WsClient.open(b.ws, "dave")
    status, body = await router.aapi("POST", "/api/disconnect", {"user": "dave"})
    assert (status, body) == (200, {"disconnected": 2})
    for conn in (dave_a, dave_b):
        async with asyncio.timeout(seconds(5)):
            await conn.conn.wait_closed()
        assert conn.conn.close_code == 4003

    # the per-user limit counts both nodes
    erin_a = await WsClient.open(a.ws, "erin")
    erin_b = await WsClient.open(b.ws, "erin")
    for node in (a, b):
        code, frames = await _open_refused(node.ws, "erin")
        assert (code, frames) == (4029, []), (node, code, frames)
    await erin_a.close()

    async def slot_free_on_b() -> bool:
        conn = await websockets.connect(
            f"{b.ws}?token={make_token('erin')}",
            subprotocols=["herald.json"],
            open_timeout=seconds(5),
            ping_interval=None,
        )
        try:
            async with asyncio.timeout(seconds(5)):
                first = json.loads(await conn.recv())
            return first["type"] == "connected"
        except ConnectionClosed:
            return False
        finally:
            await conn.close()

    await eventually_async(slot_free_on_b, 5, "erin's released slot to be usable on the other node")
    for c in (alice, erin_b):
        await c.close()
