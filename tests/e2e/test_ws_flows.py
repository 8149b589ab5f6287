"""Client-to-client features over WebSocket: publish, chat, presence status, who, history, refresh."""

from __future__ import annotations

import time

from tests.conftest import make_token
from tests.e2e.clients import WsClient
from tests.e2e.server import HeraldProcess


async def test_client_publish_reaches_other_subscribers_with_sender(herald: HeraldProcess) -> None:
    alice = await WsClient.open(herald.ws, "alice")
    bob = await WsClient.open(herald.ws, "bob")
    for c in (alice, bob):
        await c.request({"type": "subscribe", "channel": "room:flows"})
    reply, _ = await alice.request({"type": "publish", "channel": "room:flows", "data": {"t": "hi"}, "event": "chat"})
    assert reply["type"] == "published" and reply["channel"] == "room:flows"
    msg = (await bob.messages(1, "room:flows"))[0]
    assert (msg["from"], msg["event"], msg["data"], msg["offset"]) == ("alice", "chat", {"t": "hi"}, reply["offset"])
    denied, _ = await alice.request({"type": "publish", "channel": "news:x", "data": 1})
    assert (denied["type"], denied["code"]) == ("error", 403)
    await alice.close()
    await bob.close()


async def test_chat_goes_to_every_connection_of_the_recipient(herald: HeraldProcess) -> None:
    alice = await WsClient.open(herald.ws, "alice2")
    bob_tabs = [await WsClient.open(herald.ws, "bob2") for _ in range(2)]
    reply, _ = await alice.request({"type": "chat", "recipientId": "bob2", "text": "psst"})
    assert reply["type"] == "sent" and reply["offset"]
    for tab in bob_tabs:
        msg = (await tab.messages(1, "user:bob2"))[0]
        assert (msg["event"], msg["from"], msg["data"]) == ("chat", "alice2", {"text": "psst"})
    for c in (alice, *bob_tabs):
        await c.close()


async def test_presence_status_reaches_watchers_and_who_lists_it(herald: HeraldProcess) -> None:
    alice = await WsClient.open(herald.ws, "alice3", info={"name": "Alice"})
    bob = await WsClient.open(herald.ws, "bob3")
    for c in (alice, bob):
        await c.request({"type": "subscribe", "channel": "room:status"})
    await alice.conn.send('{"type":"presence","status":"busy"}')
    frame, _ = await bob.recv_until(lambda f: f["type"] == "user_status")
    assert (frame["userId"], frame["status"]) == ("alice3", "busy")
    own, _ = await alice.recv_until(lambda f: f["type"] == "user_status" and f.get("channel") == "user:alice3")
    assert own["status"] == "busy"
    who, _ = await bob.request({"type": "who", "channel": "room:status"})
    entries = {e["user"]: e for e in who["clients"]}
    assert entries["alice3"]["status"] == "busy" and entries["alice3"]["info"] == {"name": "Alice"}
    assert entries["bob3"]["status"] == "online"
    await alice.close()
    await bob.close()


async def test_join_and_leave_frames_in_a_join_leave_namespace(herald: HeraldProcess) -> None:
    """`herald dev` turns join/leave on for `room:`: others see a client arrive and go."""
    watcher = await WsClient.open(herald.ws, "watcher")
    await watcher.request({"type": "subscribe", "channel": "room:jl"})
    joiner = await WsClient.open(herald.ws, "joiner")
    await joiner.request({"type": "subscribe", "channel": "room:jl"})
    join, _ = await watcher.recv_until(lambda f: f["type"] == "join" and f["user"] == "joiner")
    assert join["channel"] == "room:jl"
    await joiner.close()
    leave, _ = await watcher.recv_until(lambda f: f["type"] == "leave" and f["user"] == "joiner")
    assert leave["client"] == join["client"]
    await watcher.close()


async def test_history_command_returns_messages_after_since(herald: HeraldProcess) -> None:
    client = await WsClient.open(herald.ws, "historian")
    subscribed, _ = await client.request({"type": "subscribe", "channel": "room:h"})
    sent = [(await client.request({"type": "publish", "channel": "room:h", "data": i}))[0] for i in range(4)]
    since = {"offset": sent[0]["offset"], "epoch": subscribed["epoch"]}
    reply, _ = await client.request({"type": "history", "channel": "room:h", "limit": 2, "since": since})
    assert reply["type"] == "history" and [m["data"] for m in reply["messages"]] == [1, 2]
    assert reply["offset"] == sent[-1]["offset"]
    await client.close()


async def test_refresh_extends_the_session_and_rejects_another_user(herald: HeraldProcess) -> None:
    client = await WsClient.open(herald.ws, "refresher")
    exp = int(time.time()) + 7200
    reply, _ = await client.request({"type": "refresh", "token": make_token("refresher", ttl=7200)})
    assert reply["type"] == "refreshed" and abs(reply["exp"] - exp) <= 2
    other, _ = await client.request({"type": "refresh", "token": make_token("someone-else")})
    assert (other["type"], other["code"]) == ("error", 403)
    pong, _ = await client.request({"type": "ping"})
    assert pong["type"] == "pong"
    await client.close()
