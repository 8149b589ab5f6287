"""Reconnect delays: exponential backoff with full jitter, and the advisory delay.

Full jitter (the AWS architecture blog's "Exponential Backoff And Jitter"): the n-th consecutive
retry waits `U(0, min(maximum, initial * multiplier**n))`, so a crowd of clients spreads out evenly
instead of reconnecting in waves. The defaults give ceilings of 0.5, 1, 2, 4, 8, 16, 20, 20, ... s.
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.core.protocol.errors import ConfigError

from .clock import RandomSource

__all__ = ["BackoffPolicy", "Backoff"]

_MAX_EXPONENT = 64  # initial * multiplier**64 is past any sane maximum; avoids float overflow


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How long to wait before reconnecting."""

    initial: float = 0.5  # ceiling of the first retry, seconds (also the jitter added to `after_ms`)
    maximum: float = 20.0  # the ceiling never grows past this
    multiplier: float = 2.0  # ceiling growth per consecutive failure
    slow_down_attempt: int = 3  # 1013/4029 ("not at once"): start at least at this attempt (≤ 4 s)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ConfigError("client: backoff needs 0 < initial <= maximum")
        if self.multiplier < 1 or self.slow_down_attempt < 0:
            raise ConfigError("client: backoff multiplier must be >= 1 and slow_down_attempt >= 0")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay of retry number `attempt` (0-based)."""
        return min(self.maximum, self.initial * self.multiplier ** min(attempt, _MAX_EXPONENT))


class Backoff:
    """The retry counter of one client. Not thread-safe; time-free (delays are returned, not slept)."""

    __slots__ = ("policy", "attempt", "_rng")

    def __init__(self, policy: BackoffPolicy, rng: RandomSource) -> None:
        self.policy = policy
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more consecutive failure."""
        delay = self._rng.random() * self.policy.ceiling(self.attempt)
        self.attempt += 1
        return delay

    def slow_down(self) -> float:
        """Like `next_delay`, but never from the first rungs (node full, too many connections)."""
        self.attempt = max(self.attempt, self.policy.slow_down_attempt)
        return self.next_delay()

    def advised(self, after_ms: int | float) -> float:
        """After a `reconnect` advisory: `after_ms` plus up to `initial` of jitter. Not a failure."""
        return max(0.0, after_ms / 1000.0) + self._rng.random() * self.policy.initial

    def reset(self) -> None:
        """A connection did real work: the next failure starts from the first rung again."""
        self.attempt = 0
