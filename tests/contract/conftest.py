"""Engine factories for the contract suite. Every engine runs every test in test_engine_contract.py.

A factory returns (engine, advance) where `advance(seconds)` moves the engine's notion of time
forward (a fake clock for MemoryEngine), so retention tests need no sleeping.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from herald.core.config import NamespaceOptions
from herald.core.engine.base import Engine
from herald.core.engine.memory import MemoryEngine

#: Namespace options the suite relies on: "small" keeps 3 messages for 10 s.
NAMESPACES = {
    "small": NamespaceOptions(history_size=3, history_ttl=10.0),
    "none": NamespaceOptions(history_size=0, history_ttl=10.0),
}


def options(ns: str) -> NamespaceOptions:
    return NAMESPACES.get(ns, NamespaceOptions(history_size=100, history_ttl=300.0))


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
    advance: Callable[[float], None]
    make_another: Callable[[], Engine]  # a second handle on the same shared state (same process: same engine)


async def _memory() -> AsyncIterator[EngineUnderTest]:
    clock = FakeClock()
    engine = MemoryEngine(options, clock=clock)
    await engine.start()
    yield EngineUnderTest(engine, clock.advance, lambda: engine)
    await engine.close()


ENGINE_FACTORIES = {"memory": _memory}


@pytest.fixture(params=sorted(ENGINE_FACTORIES))
async def eut(request: pytest.FixtureRequest) -> AsyncIterator[EngineUnderTest]:
    async for value in ENGINE_FACTORIES[request.param]():
        yield value
