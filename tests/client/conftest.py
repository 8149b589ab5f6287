"""Fixtures of the client SDK tests: real `herald dev` subprocesses, the real cluster fixture
(redis-server shards, routers and nodes as subprocesses), and clocks to inject into the client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from herald.client import HeraldClient
from tests.cluster.conftest import cluster, cluster_factory, pytest_runtest_makereport  # noqa: F401 - fixtures
from tests.e2e.conftest import herald  # noqa: F401 - fixture: one `herald dev` per module


class FakeClock:
    """A clock whose `sleep` returns at once and only records the delay (unit tests of timing)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class GateClock:
    """The real clock, recording every sleep; `hold()` makes the next sleeps wait for `release()`
    — a client kept away from the server while the test changes the world."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self._gate = asyncio.Event()
        self._gate.set()
        self.waiting = 0

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if not self._gate.is_set():
            self.waiting += 1
            try:
                await self._gate.wait()
            finally:
                self.waiting -= 1
        await asyncio.sleep(seconds)


@pytest.fixture
async def clients() -> AsyncIterator[list[HeraldClient]]:
    """Clients to close at teardown whatever happened: append them."""
    made: list[HeraldClient] = []
    yield made
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)
