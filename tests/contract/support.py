"""Helpers of the role contract suites."""

from __future__ import annotations

import asyncio

from .conftest import EngineUnderTest


async def collector(eut: EngineUnderTest, node: str = "n1") -> list:
    got: list = []
    await eut.engine.attach(node, got.extend)
    return got


async def wait_for(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
