"""Backoff timings, the close-code policy table and the reconnect plans built from them: pure,
no sockets except a closed port."""

from __future__ import annotations

import random

import pytest

from herald.client import (
    CLOSE_POLICY,
    Action,
    Backoff,
    BackoffPolicy,
    ClientClosed,
    HeraldClient,
    MessageTooBig,
    Unauthorized,
    reaction_for,
)
from herald.client.auth import TokenSource, jwt_expiry
from herald.client.policy import code_for_http_status
from herald.client.reconnect import Reconnector
from herald.client.transport import Closed
from herald.core.protocol.errors import ConfigError
from tests.cluster.checker import eventually
from tests.conftest import make_token
from tests.redis_server import free_port

from .conftest import FakeClock

CEILINGS = [0.5, 1, 2, 4, 8, 16, 20, 20, 20, 20]


class Fixed:
    """A random source that always returns `value`."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_ceilings_double_from_half_a_second_and_cap_at_twenty() -> None:
    policy = BackoffPolicy()
    assert [policy.ceiling(n) for n in range(10)] == CEILINGS
    assert policy.ceiling(10_000) == 20  # no overflow, still capped


@pytest.mark.parametrize("value", [0.0, 0.5, 0.999999])
def test_full_jitter_spans_zero_to_the_ceiling(value: float) -> None:
    backoff = Backoff(BackoffPolicy(), Fixed(value))
    assert [backoff.next_delay() for _ in range(10)] == [value * c for c in CEILINGS]


def test_full_jitter_with_a_real_rng_stays_within_bounds_and_uses_the_range() -> None:
    rng = random.Random(1)
    delays: dict[int, list[float]] = {n: [] for n in range(8)}
    for _ in range(500):
        backoff = Backoff(BackoffPolicy(), rng)
        for n in range(8):
            delays[n].append(backoff.next_delay())
    for n, ds in delays.items():
        ceiling = BackoffPolicy().ceiling(n)
        assert all(0 <= d < ceiling for d in ds)
        assert min(ds) < 0.1 * ceiling and max(ds) > 0.9 * ceiling  # full jitter, not "equal jitter"


def test_reset_slow_down_and_advisory_delays() -> None:
    backoff = Backoff(BackoffPolicy(), Fixed(0.5))
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.25
    assert backoff.slow_down() == 0.5 * 4  # starts at attempt 3 (ceiling 4 s)
    assert backoff.slow_down() == 0.5 * 8
    attempt = backoff.attempt
    assert backoff.advised(1500) == 1.5 + 0.5 * 0.5  # after_ms plus up to `initial` of jitter
    assert backoff.attempt == attempt  # an advisory is not a failure


def test_custom_policy_and_validation() -> None:
    policy = BackoffPolicy(initial=0.1, maximum=1.0, multiplier=3)
    assert [policy.ceiling(n) for n in range(4)] == pytest.approx([0.1, 0.3, 0.9, 1.0])
    with pytest.raises(ConfigError):
        BackoffPolicy(initial=0)
    with pytest.raises(ConfigError):
        BackoffPolicy(initial=5, maximum=1)


@pytest.mark.parametrize(
    ("code", "action", "rotate"),
    [
        (1000, Action.STOP, False),
        (1001, Action.BACKOFF, True),
        (1006, Action.BACKOFF, True),
        (1009, Action.BUG, False),
        (1011, Action.BACKOFF, True),
        (1012, Action.ADVISED, True),
        (1013, Action.SLOW_DOWN, True),
        (4000, Action.BACKOFF, False),
        (4001, Action.REAUTH, False),
        (4003, Action.STOP, False),
        (4008, Action.BACKOFF, False),
        (4029, Action.SLOW_DOWN, False),
        (4999, Action.BACKOFF, True),  # unknown: back off, try another node
    ],
)
def test_close_code_policy_table(code: int, action: Action, rotate: bool) -> None:
    reaction = reaction_for(code)
    assert (reaction.action, reaction.rotate) == (action, rotate)


def test_policy_table_covers_every_contract_close_code() -> None:
    from herald.core.protocol.closecodes import CloseCode

    assert set(CloseCode) <= set(CLOSE_POLICY)


@pytest.mark.parametrize(
    ("status", "code"), [(401, 4001), (403, 4003), (429, 4029), (413, 1009), (503, 1006), (502, 1006)]
)
def test_http_refusals_map_onto_close_codes(status: int, code: int) -> None:
    assert code_for_http_status(status) == code


def test_token_refresh_is_scheduled_before_expiry() -> None:
    token = make_token("u", ttl=600)
    exp = jwt_expiry(token)
    assert exp is not None
    now = exp - 600
    source = TokenSource(lambda: token)
    assert source.refresh_delay(now, margin=30) is None  # no token yet
    source.current = token
    assert source.refresh_delay(now, margin=30) == pytest.approx(570)  # 30 s before
    assert source.refresh_delay(exp - 10, margin=30) == pytest.approx(8)  # at most a fifth of what is left
    assert source.refresh_delay(exp + 5, margin=30) == 1.0  # never sooner than a second
    assert TokenSource(token).refresh_delay(now, margin=30) is None  # a plain string cannot be refreshed
    assert jwt_expiry("not-a-jwt") is None


async def test_reconnect_loop_sleeps_the_backoff_sequence_without_real_waiting() -> None:
    """Nothing listens on the port: every attempt fails at once; the loop asks the injected clock
    to sleep exactly rng() * ceiling(n) for n = 0, 1, 2, ... — the same rng sequence replayed."""
    clock = FakeClock()
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    client = HeraldClient(urls, token="t", clock=clock, rng=random.Random(42))
    try:
        await client.connect(wait=False)
        await eventually(lambda: len(clock.sleeps) >= 10, 10, "ten reconnect attempts")
    finally:
        await client.close()
    replay = random.Random(42)
    assert clock.sleeps[:10] == [replay.random() * c for c in CEILINGS]
    assert client.stats.connections == 0
    assert list(client.stats.delays) == clock.sleeps[-len(client.stats.delays) :]


def planner(token: object = "t", value: float = 0.5) -> Reconnector:
    return Reconnector(Backoff(BackoffPolicy(), Fixed(value)), TokenSource(token))  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [1000, 4003])
async def test_plan_stops_on_final_codes(code: int) -> None:
    plan = await planner().plan(Closed(code, "bye"))
    assert plan.delay is None and isinstance(plan.error, ClientClosed) and plan.error.code == code


async def test_plan_waits_after_ms_plus_jitter_on_1012_and_moves_to_the_next_url() -> None:
    plan = await planner(value=0.5).plan(Closed(1012, "drain", after_ms=700))
    assert plan.delay == pytest.approx(0.7 + 0.25) and plan.rotate


async def test_plan_backs_off_and_surfaces_1009() -> None:
    p = planner(value=1.0 - 1e-9)
    first, second = await p.plan(Closed(1011)), await p.plan(Closed(4008))
    assert first.delay == pytest.approx(0.5) and first.rotate and first.notice is None
    assert second.delay == pytest.approx(1.0) and not second.rotate  # a slow consumer resumes on its node
    bug = await p.plan(Closed(1009, "too big"))
    assert isinstance(bug.notice, MessageTooBig) and bug.delay is not None


async def test_plan_4001_needs_a_new_token_from_the_callback() -> None:
    tokens = iter(["t2", "t2"])
    p = planner(lambda: next(tokens))
    p.tokens.current = "t1"
    plan = await p.plan(Closed(4001, "token expired"))
    assert plan.delay is not None and plan.renewed and p.tokens.current == "t2"
    again = await p.plan(Closed(4001, "token expired"))  # the callback gives the refused one again
    assert again.delay is None and isinstance(again.error, Unauthorized)
    no_callback = await planner("fixed").plan(Closed(4001))
    assert no_callback.delay is None and isinstance(no_callback.error, Unauthorized)

    def broken() -> str:
        raise RuntimeError("token service down")

    failing = await planner(broken).plan(Closed(4001))
    assert failing.delay is not None and failing.need_token and "token service down" in str(failing.notice)
