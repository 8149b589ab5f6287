"""Engine factories for the contract suite. Every engine runs every test in test_engine_contract.py.

A factory yields an EngineUnderTest whose `advance(seconds)` moves the engine's notion of time
forward: a fake clock for MemoryEngine; for RedisEngine (whose clock is Redis's own) the
namespace TTLs are scaled down by `time_scale` and `advance` waits the scaled time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from herald.core.config import NamespaceOptions
from herald.core.engine.base import Engine
from herald.core.engine.memory import MemoryEngine
from herald.core.engine.redis import RedisEngine
from herald.router.service import Router
from tests.redis_server import RedisServer, start_redis


def namespaces(scale: float) -> Callable[[str], NamespaceOptions]:
    """ "small" keeps 3 messages for 10 s (scaled); "none" keeps nothing; "jl" has join/leave events."""
    table = {
        "small": NamespaceOptions(history_size=3, history_ttl=10.0 * scale),
        "none": NamespaceOptions(history_size=0, history_ttl=10.0 * scale),
        "jl": NamespaceOptions(join_leave=True),
    }
    return lambda ns: table.get(ns, NamespaceOptions(history_size=100, history_ttl=300.0))


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class EngineUnderTest:
    engine: Engine
    advance: Callable[[float], object]  # may return an awaitable
    idempotency_window: float

    async def wait(self, seconds: float) -> None:
        result = self.advance(seconds)
        if asyncio.iscoroutine(result):
            await result


async def _memory(_: object) -> AsyncIterator[EngineUnderTest]:
    clock = FakeClock()
    engine = MemoryEngine(namespaces(1.0), clock=clock)
    await engine.start()
    yield EngineUnderTest(engine, clock.advance, 300.0)
    await engine.close()


REDIS_SCALE = 0.1


async def _redis(servers: list[RedisServer]) -> AsyncIterator[EngineUnderTest]:
    for server in servers:
        server.client().flushall()
    engine = RedisEngine(
        [s.url for s in servers], partitions=8, options=namespaces(REDIS_SCALE), idempotency_window=2.0
    )
    await engine.start()
    router = Router(engine.log, engine, "contract-router", lease_seconds=2.0, block_ms=20)
    await router.start()

    async def advance(seconds: float) -> None:
        await asyncio.sleep(seconds * REDIS_SCALE)

    yield EngineUnderTest(engine, advance, 2.0 / REDIS_SCALE)
    await router.stop()
    await engine.close()


ENGINE_FACTORIES = {"memory": _memory, "redis": _redis}


@pytest.fixture(scope="session")
def redis_shards() -> Iterator[list[RedisServer]]:
    """Two real redis-server shards for the whole session."""
    servers = [start_redis(), start_redis()]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(params=sorted(ENGINE_FACTORIES))
async def eut(request: pytest.FixtureRequest) -> AsyncIterator[EngineUnderTest]:
    servers = request.getfixturevalue("redis_shards") if request.param == "redis" else None
    async for value in ENGINE_FACTORIES[request.param](servers):
        yield value
