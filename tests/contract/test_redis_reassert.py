"""A shard that restarts without its data loses which nodes subscribe to its channels; the engine
notices (its incarnation marker changed) and registers them again. When that first attempt fails,
the next round must try again — not take the new marker as seen and forget the subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from herald.core.engine.redis import RedisEngine, keys
from tests.conftest import seconds
from tests.redis_server import start_redis

#: The default user may do everything but run scripts: registrations are refused (NOPERM).
NO_SCRIPTS = ("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-@scripting")


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(seconds(timeout)):
        while not await asyncio.to_thread(predicate):
            await asyncio.sleep(0.05)


async def test_subscriptions_come_back_after_data_loss_even_when_the_first_try_is_refused() -> None:
    srv = start_redis()
    engine = RedisEngine([srv.url], partitions=8)
    await engine.start()
    admin = srv.client()
    channels = ["room:a", "room:b", "room:c"]
    wanted = {f"{ch}\nnode-1".encode() for ch in channels}

    def registered() -> set[bytes]:
        found: set[bytes] = set()
        for ch in channels:
            found |= set(admin.hkeys(keys.subs_key(engine.partition(ch))))
        return found

    try:
        for ch in channels:
            await engine.subscribe("node-1", ch)
        assert registered() == wanted
        await eventually(lambda: 0 in engine.coordination._incarnations)  # the engine knows the shard's marker

        srv.args = NO_SCRIPTS
        await asyncio.to_thread(srv.restart)  # empty, and refusing scripts for now
        await eventually(lambda: any(e.get("object") == "evalsha" for e in admin.acl_log()))
        assert registered() == set()  # the first attempt was refused

        admin.execute_command("ACL", "SETUSER", "default", "+@scripting")
        await eventually(lambda: registered() == wanted)  # a later round registered them all
    finally:
        await engine.close()
        srv.stop()
