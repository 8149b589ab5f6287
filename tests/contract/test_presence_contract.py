"""The Presence role (core/engine/base.py), run against every engine: presence entries, per-user
connection counts, disconnecting a user."""

from __future__ import annotations

from herald.core.engine.base import PresenceEntry
from herald.core.engine.redis import RedisEngine
from herald.core.protocol.envelope import Disconnect

from .conftest import EngineUnderTest
from .support import collector, wait_for


async def test_presence_add_list_remove(eut: EngineUnderTest) -> None:
    """Presence lists the clients added to a channel, with their latest status, until removed."""
    e = eut.engine
    await e.presence_add("room:p", PresenceEntry("c1", "alice", "n1", "online", {"name": "A"}))
    await e.presence_add("room:p", PresenceEntry("c2", "bob", "n1"))
    await e.presence_add("room:p", PresenceEntry("c1", "alice", "n1", "away", {"name": "A"}))
    entries = {p.client: p for p in await e.presence("room:p")}
    assert set(entries) == {"c1", "c2"} and entries["c1"].status == "away" and entries["c1"].info == {"name": "A"}
    await e.presence_remove("room:p", "c1")
    await e.presence_remove("room:p", "c1")
    assert [p.client for p in await e.presence("room:p")] == ["c2"]


async def test_per_user_connection_limit_is_enforced_and_released(eut: EngineUnderTest) -> None:
    """user_acquire refuses past the limit, counts a client once, and frees on release."""
    e = eut.engine
    assert await e.user_acquire("u", "c1", 2) and await e.user_acquire("u", "c2", 2)
    assert await e.user_acquire("u", "c1", 2)  # the same client again
    assert not await e.user_acquire("u", "c3", 2)
    await e.user_release("u", "c1")
    assert await e.user_acquire("u", "c3", 2)


async def test_disconnect_user_reaches_every_node_and_counts_connections(eut: EngineUnderTest) -> None:
    """disconnect_user tells every node holding the user and returns its connection count."""
    got1, got2 = await collector(eut, "n1"), await collector(eut, "n2")
    e = eut.engine
    await e.subscribe("n1", "user:mallory")  # nodes hold the personal channel of their users
    await e.subscribe("n2", "user:mallory")
    await e.user_acquire("mallory", "c1", 10)
    await e.user_acquire("mallory", "c2", 10)
    assert await e.disconnect_user("mallory", 4003) == 2
    await wait_for(lambda: got1 and got2)
    assert got1 == [Disconnect("mallory", 4003)] == got2


async def test_presence_and_user_counts_survive_a_refresh_and_expire_without_one(eut: EngineUnderTest) -> None:
    """Entries a process registered are re-asserted by its refresh; they are what keeps them alive."""
    e = eut.engine
    await e.presence_add("room:refresh", PresenceEntry("c1", "u1", "n1"))
    assert await e.user_acquire("u1", "c1", 1)
    if isinstance(e, RedisEngine):  # one pipelined pass must keep everything in place
        await e.presence_manager.refresh()
    assert [p.client for p in await e.presence("room:refresh")] == ["c1"]
    assert not await e.user_acquire("u1", "c2", 1)
