"""Herald's own state per idle connection (Session, Hub, MemoryEngine): its size, and the compact
registries behind it (one subscriber held directly, a dict from the second on)."""

from __future__ import annotations

import gc
import tracemalloc

from herald.core.engine.base import PresenceEntry
from herald.core.engine.memory import MemoryEngine
from herald.core.protocol.codec import JSON
from herald.core.protocol.envelope import ChannelName, Publication
from herald.core.protocol.session import Session, SessionLimits
from herald.node.hub import Encoded, Hub, Subscriber
from herald.node.metrics import NodeMetrics
from tests.unit._support import AUTH, NOW, drain, make_principal, make_token, pub, send

#: Bytes of Herald's state per idle connection: about 1,350 measured (2,900 before the registries
#: were made compact); the session with its subscriptions and token bucket is about half of it.
IDLE_BUDGET = 1600


class Conn(Subscriber):
    """A connection as the hub sees it, recording what reaches it."""

    __slots__ = ("user", "session", "got", "codes")

    def __init__(self, session: Session) -> None:
        self.user = session.user
        self.session = session
        self.got: list[str] = []
        self.codes: list[int] = []

    def deliver(self, pub: Publication, enc: Encoded) -> bool:
        self.got.append(pub.offset)
        return True

    def signal(self, enc: Encoded) -> None:
        self.got.append("signal")

    def disconnect(self, code: int) -> None:
        self.codes.append(code)


class IdleConn(Subscriber):
    """Only what a connection must hold for the hub (like WsConnection's `user` and `session`)."""

    __slots__ = ("user", "session")

    def __init__(self, session: Session) -> None:
        self.user = session.user
        self.session = session


def conn_for(user: str) -> Conn:
    principal = AUTH.verify(make_token(user, channels=["*"]), NOW)
    return Conn(Session(f"c-{user}", "n1", JSON, SessionLimits(), AUTH.verify, NOW, principal))


async def hub_with_engine() -> tuple[Hub, MemoryEngine]:
    engine = MemoryEngine()
    hub = Hub("n1", engine, NodeMetrics("n1"))
    await engine.attach("n1", hub.dispatch)
    return hub, engine


async def test_a_channel_reaches_its_subscribers_in_order_as_they_come_and_go() -> None:
    """One, two, three, then two subscribers of a channel: each publication reaches exactly the
    current ones, in the order they subscribed."""
    hub, engine = await hub_with_engine()
    a, b, c = conn_for("a"), conn_for("b"), conn_for("c")
    await hub.add("room:1", a)
    first = await engine.publish(ChannelName("room:1"), 1)
    await hub.add("room:1", b)
    await hub.add("room:1", b)  # twice is once
    await hub.add("room:1", c)
    second = await engine.publish(ChannelName("room:1"), 2)
    await hub.remove("room:1", b)
    third = await engine.publish(ChannelName("room:1"), 3)
    assert a.got == [first.offset, second.offset, third.offset]
    assert b.got == [second.offset]
    assert c.got == [second.offset, third.offset]
    assert hub.channel_count == 1


async def test_the_node_is_unregistered_when_its_last_local_subscriber_leaves() -> None:
    """The engine routes a channel to the node while it has a local subscriber, and only then."""
    hub, engine = await hub_with_engine()
    a, b = conn_for("a"), conn_for("b")
    await hub.add("room:1", a)
    await hub.add("room:1", b)
    await hub.remove("room:1", a)
    await hub.remove("room:1", a)  # not subscribed any more: nothing happens
    await engine.publish(ChannelName("room:1"), 1)
    await hub.remove("room:1", b)
    await engine.publish(ChannelName("room:1"), 2)
    assert (len(a.got), len(b.got)) == (0, 1)
    assert hub.channel_count == 0
    assert await engine.cleanup_node("n1") == {"subscriptions": 0, "presence": 0, "connections": 0}


async def test_disconnecting_a_user_reaches_each_of_its_connections() -> None:
    """add_user/remove_user with one and with several connections of the same user."""
    hub, engine = await hub_with_engine()
    one, two, other = conn_for("alice"), conn_for("alice"), conn_for("bob")
    for conn in (one, two, other):
        hub.add_user(conn)
        await hub.add(conn.session.personal, conn)
    await engine.disconnect_user("alice", 4001)
    hub.remove_user(one)
    await engine.disconnect_user("alice", 4002)
    hub.remove_user(two)
    hub.remove_user(two)
    await engine.disconnect_user("alice", 4003)
    assert (one.codes, two.codes, other.codes) == ([4001], [4001, 4002], [])


async def test_presence_holds_one_entry_or_many_and_updates_in_place() -> None:
    """A channel's presence through one entry, a second, a status update, and removals."""
    engine = MemoryEngine()
    room = ChannelName("room:1")
    a, b = PresenceEntry("c1", "alice", "n1"), PresenceEntry("c2", "bob", "n2")
    await engine.presence_add(room, a)
    await engine.presence_add(room, PresenceEntry("c1", "alice", "n1", "away"))
    assert [e.status for e in await engine.presence(room)] == ["away"]
    await engine.presence_add(room, b)
    await engine.presence_add(room, a)
    assert await engine.presence(room) == [a, b]
    await engine.presence_remove(room, "c3")
    await engine.presence_remove(room, "c1")
    assert await engine.presence(room) == [b]
    await engine.presence_add(room, a)
    assert (await engine.cleanup_node("n2"))["presence"] == 1
    assert await engine.presence(room) == [a]
    await engine.presence_remove(room, "c2")
    await engine.presence_remove(room, "c1")
    assert await engine.presence(room) == []


def test_the_personal_channel_is_formatted_once_and_an_idle_session_holds_no_frame_list() -> None:
    """The personal channel name is one string shared by `subs` and `personal`; after a drain
    there is nothing to send and no list behind it."""
    s = Session("c1", "n1", JSON, SessionLimits(), AUTH.verify, NOW, make_principal("alice"))
    assert s.personal == "user:alice" and s.personal is next(iter(s.subs))
    assert [f["type"] for f in drain(s)] == ["connected"]
    assert s.frames_to_send() == [] and s._frames is None
    send(s, {"type": "ping", "id": 1})
    assert drain(s) == [{"type": "pong", "id": 1}]
    assert s.deliver(pub("user:alice", 1)) and s.frames_to_send() == []


async def test_an_idle_connection_stays_within_its_memory_budget() -> None:
    """The benchmark's idle connection: user bench-<i> subscribed to `u<i>` (with presence) and to
    its personal channel, on the memory engine. Measured with tracemalloc over 2,000 of them."""
    n = 2000
    hub, engine = await hub_with_engine()
    principals = [AUTH.verify(make_token(f"bench-{i}", channels=["*"]), NOW) for i in range(n)]
    client_ids = [f"client-{i:08d}" for i in range(n)]
    frames = [f'{{"type":"subscribe","channel":"u{i}"}}' for i in range(n)]
    limits, conns = SessionLimits(), []
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            s = Session(client_ids[i], "n1", JSON, limits, AUTH.verify, NOW, principals[i])
            conn = IdleConn(s)
            assert await engine.user_acquire(s.user, s.client_id, 16)
            hub.add_user(conn)
            await hub.add(s.personal, conn)
            s.frames_to_send()
            cmd = s.receive(frames[i], NOW)
            s.begin_subscribe(cmd)
            await hub.add(cmd.channel, conn)
            s.complete_subscribe(cmd, await engine.history(cmd.channel, since=cmd.since))
            s.frames_to_send()
            await engine.presence_add(cmd.channel, PresenceEntry(s.client_id, s.user, s.node_id, s.status))
            conns.append(conn)
        gc.collect()
        per_conn = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert per_conn < IDLE_BUDGET, f"{per_conn:.0f} bytes per idle connection"
