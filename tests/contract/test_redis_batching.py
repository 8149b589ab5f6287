"""RedisEngine sends its script calls in batches per shard (one pipeline per round trip, see
`RedisEngine._run`). What a caller must still see: each call's own answer, in the order the calls
were made, an error only for the call that failed, and every call done exactly once when a shard
forgot its scripts in the middle of a burst."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from herald.core.engine.base import PresenceEntry
from herald.core.engine.redis import RedisEngine, keys
from herald.core.protocol.envelope import offset_key
from herald.core.protocol.errors import EngineUnavailable
from tests.redis_server import RedisServer, start_redis


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = start_redis()
    yield srv
    srv.stop()


@pytest.fixture
async def engine(server: RedisServer) -> AsyncIterator[RedisEngine]:
    server.client().flushall()
    eng = RedisEngine([server.url], partitions=8)
    await eng.start()
    yield eng
    await eng.close()


async def test_concurrent_publishes_to_one_channel_get_offsets_in_call_order(engine: RedisEngine) -> None:
    n = 2500  # more than one round trip carries (_PIPELINE_MAX)
    results = await asyncio.gather(*(engine.publish("room:a", {"i": i}) for i in range(n)))
    offsets = [offset_key(r.offset) for r in results]
    assert offsets == sorted(offsets) and len(set(offsets)) == n
    history = await engine.history("room:a")
    assert [m.data["i"] for m in history.messages] == list(range(n - 100, n))  # history keeps the last 100


async def test_one_failing_call_fails_alone_and_its_neighbours_succeed(
    engine: RedisEngine, server: RedisServer
) -> None:
    p = engine.partition("room:broken")
    server.client().set(keys.hist_key(p, "room:broken"), "not a stream")  # every XADD to it is WRONGTYPE
    calls = [engine.publish(f"room:{i}", i) for i in range(20)]
    calls.insert(10, engine.publish("room:broken", "x"))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[10], EngineUnavailable)
    assert "WRONGTYPE" in str(results[10])
    assert not any(isinstance(r, Exception) for i, r in enumerate(results) if i != 10)
    assert [len((await engine.history(f"room:{i}")).messages) for i in range(20)] == [1] * 20


async def test_a_batch_with_known_and_forgotten_scripts_runs_each_call_once(
    engine: RedisEngine, server: RedisServer
) -> None:
    redis = server.client()
    redis.script_flush()  # as after a restart: the shard knows no script...
    await engine.publish("room:warm", 0)  # ...then only the publish script again
    loads = redis.info("commandstats")["cmdstat_script|load"]["calls"]

    async def client(i: int) -> None:
        steps = [
            lambda: engine.publish(f"room:{i % 7}", {"from": i}),
            lambda: engine.subscribe("node-1", f"room:{i % 7}"),
            lambda: engine.user_acquire(f"u{i}", f"c{i}", 5),
            lambda: engine.presence_add(f"room:{i % 7}", PresenceEntry(f"c{i}", f"u{i}", "node-1", "online", None)),
        ]
        for step in steps[i % 4 :] + steps[: i % 4]:  # so each batch mixes the four scripts
            await step()

    await asyncio.gather(*(client(i) for i in range(200)))
    assert redis.info("commandstats")["cmdstat_script|load"]["calls"] > loads  # refused calls were retried

    senders = []
    for ch in range(7):
        senders += [m.data["from"] for m in (await engine.history(f"room:{ch}")).messages]
    assert sorted(senders) == list(range(200))  # every publish exactly once: no loss, no duplicate from a retry
    for i in (0, 99, 100, 199):
        assert await engine.user_acquire(f"u{i}", "another", 1) is False  # counted once, limit holds
    present = set()
    for ch in range(7):
        present |= {e.client for e in await engine.presence(f"room:{ch}")}
    assert present == {f"c{i}" for i in range(200)}


async def test_callers_waiting_on_a_dead_shard_get_an_error_not_a_hang() -> None:
    srv = start_redis()
    eng = RedisEngine([srv.url], partitions=8)
    await eng.start()
    try:
        await eng.publish("room:a", 1)
        srv.kill()
        results = await asyncio.wait_for(
            asyncio.gather(
                *(eng.publish("room:a", i) for i in range(50)),
                eng.history("room:a"),
                eng.user_acquire("u", "c", 1),
                return_exceptions=True,
            ),
            timeout=30,
        )
        assert all(isinstance(r, EngineUnavailable) for r in results), results
        srv.restart()
        assert (await eng.publish("room:a", 2)).channel == "room:a"  # the engine recovers with the shard
    finally:
        await eng.close()
        srv.stop()


async def test_repeats_of_one_idempotency_key_in_one_batch_publish_once(engine: RedisEngine) -> None:
    calls = [engine.publish("room:idem", {"n": i}, idempotency_key="k1" if i % 2 else None) for i in range(10)]
    results = await asyncio.gather(*calls)
    assert len({results[i].offset for i in range(1, 10, 2)}) == 1  # every repeat got the first one's answer
    history = await engine.history("room:idem")
    assert [m.data["n"] for m in history.messages] == [0, 1, 2, 4, 6, 8]
