"""The token bucket behind client rate limits, with the clock passed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.protocol.ratelimit import TokenBucket


def test_a_full_bucket_allows_exactly_burst_takes_at_one_instant() -> None:
    """A new bucket holds `burst` tokens."""
    b = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_one_token_refills_after_one_over_rate_seconds() -> None:
    """After 1/rate seconds one more take succeeds, and only one."""
    b = TokenBucket(rate=4.0, burst=1, now=0.0)
    assert b.take(0.0) and not b.take(0.0)
    assert not b.take(0.125)
    assert b.take(0.25)
    assert not b.take(0.25)


def test_refill_never_exceeds_burst() -> None:
    """A long pause refills to `burst`, not beyond."""
    b = TokenBucket(rate=10.0, burst=2, now=0.0)
    b.take(0.0)
    b.take(0.0)
    assert [b.take(1000.0) for _ in range(3)] == [True, True, False]


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    """An earlier `now` neither refills nor breaks the bucket."""
    b = TokenBucket(rate=1.0, burst=1, now=50.0)
    assert b.take(50.0)
    assert not b.take(10.0)
    assert b.take(51.0)


def test_a_steady_client_at_the_rate_is_never_limited() -> None:
    """Taking exactly once per 1/rate seconds always succeeds (with exactly representable steps)."""
    b = TokenBucket(rate=8.0, burst=1, now=0.0)
    assert all(b.take(i * 0.125) for i in range(1000))


def test_refill_works_at_realistic_clock_values() -> None:
    """At time.time()-sized clocks, a token is back just after 1/rate seconds (float ulp aside)."""
    now = 1_732_560_000.123
    b = TokenBucket(rate=50.0, burst=1, now=now)
    assert b.take(now) and not b.take(now + 0.01)
    assert b.take(now + 1 / 50 + 1e-6)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.5, 1000),
    st.integers(1, 50),
    st.floats(0, 2e9),
    st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=50),
)
def test_takes_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: int, start: float, steps: list[float]
) -> None:
    """Over any window the number of successful takes is at most burst + rate * elapsed."""
    b = TokenBucket(rate, burst, start)
    now, taken = start, 0
    for step in steps:
        now += step
        taken += sum(b.take(now) for _ in range(3))
    assert taken <= burst + rate * (now - start) + 1e-6
