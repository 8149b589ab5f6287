"""Time and randomness, injected: the client never reads them any other way.

Tests pass a clock whose `sleep` records the delay and returns at once, and a random source with
known values, so backoff and refresh timings are checked without real waiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol

__all__ = ["Clock", "RandomSource", "SystemClock", "SYSTEM_CLOCK", "SYSTEM_RANDOM"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations)."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch (token expiry)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (reconnect delays, token refresh)."""
        ...


class RandomSource(Protocol):
    def random(self) -> float:
        """A float in [0, 1)."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time`, `asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
#: Default random source; any object with `random()` works (e.g. `random.Random(seed)`).
SYSTEM_RANDOM: RandomSource = random.Random()
