"""The dedupe/ordering rule and the SSE cursor handling of `herald.client.positions`, and the
incremental event-stream parser: pure, no I/O."""

from __future__ import annotations

import random

import pytest

from herald.client.events import Message, Position, Resync, Subscribed, offset_order
from herald.client.eventstream import EventStreamParser, SseComment, SseEvent
from herald.client.positions import Positions, Verdict
from herald.core.protocol.envelope import Epoch, Offset
from herald.core.protocol.sse import channel_tag, decode_cursor, encode_cursor


def msg(channel: str, offset: str, epoch: str = "e1", data: object = None) -> Message:
    return Message(channel, offset, epoch, data)


def pos(offset: str, epoch: str = "e1") -> Position:
    return Position(Offset(offset), Epoch(epoch))


def live(channel: str = "room:a", offset: str = "10-0", epoch: str = "e1") -> Positions:
    p = Positions()
    p.track(channel, wanted=True)
    p.subscribe_request(channel)
    p.on_subscribed(Subscribed(channel, epoch, offset, False, 0))
    return p


def test_offsets_compare_as_integer_pairs_not_strings() -> None:
    assert offset_order("9-0") < offset_order("10-0") < offset_order("10-1") < offset_order("10-10")
    assert offset_order("1732560000123-0") < offset_order("1732560000124-0")


def test_fresh_subscription_starts_at_the_latest_offset_and_delivers_only_newer() -> None:
    p = live(offset="10-0")
    assert p.accept(msg("room:a", "9-0"))[0] is Verdict.DUPLICATE
    assert p.accept(msg("room:a", "10-0"))[0] is Verdict.DUPLICATE
    assert p.accept(msg("room:a", "11-0")) == (Verdict.DELIVER, None)
    assert p.get("room:a").position == pos("11-0")  # type: ignore[union-attr]


def test_same_offset_is_never_delivered_twice_and_never_out_of_order() -> None:
    """Feed a shuffled stream with repeats: what is delivered is strictly increasing, each once."""
    p = live(offset="0-0")
    rng = random.Random(3)
    offsets = [f"{ms}-{seq}" for ms in range(1, 30) for seq in range(3)]
    stream = offsets + rng.sample(offsets, 40)  # in order, then old ones again
    delivered = [m.offset for m in (msg("room:a", o) for o in stream) if p.accept(m)[0] is Verdict.DELIVER]
    assert delivered == offsets


def test_resume_in_flight_drops_early_messages_that_the_server_sends_again() -> None:
    p = live(offset="10-0")
    p.accept(msg("room:a", "11-0"))
    p.new_connection()  # reconnect: the personal channel is live on the server at once
    request = p.subscribe_request("room:a")
    assert request["since"] == {"offset": "11-0", "epoch": "e1"}
    assert p.accept(msg("room:a", "15-0"))[0] is Verdict.EARLY  # before the reply: would skip 12..14
    assert p.on_subscribed(Subscribed("room:a", "e1", "15-0", True, 4)) is None
    got = [
        o for o in ("12-0", "13-0", "14-0", "15-0", "15-0", "16-0") if p.accept(msg("room:a", o))[0] is Verdict.DELIVER
    ]
    assert got == ["12-0", "13-0", "14-0", "15-0", "16-0"]


def test_resume_not_recovered_yields_a_resync_and_restarts_at_the_announced_position() -> None:
    p = live(offset="10-0")
    p.new_connection()
    p.subscribe_request("room:a")
    resync = p.on_subscribed(Subscribed("room:a", "e2", "3-0", False, 0))
    assert resync == Resync("room:a", pos("10-0"), "e2", "3-0", "not_recovered")
    assert resync.recovered is False
    assert p.accept(msg("room:a", "3-0", "e2"))[0] is Verdict.DUPLICATE
    assert p.accept(msg("room:a", "4-0", "e2")) == (Verdict.DELIVER, None)


def test_a_live_message_of_a_new_epoch_is_reported_before_it_is_delivered() -> None:
    p = live(offset="10-0")
    verdict, resync = p.accept(msg("room:a", "1-0", "e9"))
    assert verdict is Verdict.DELIVER
    assert resync == Resync("room:a", pos("10-0"), "e9", None, "epoch_changed")
    assert p.accept(msg("room:a", "1-0", "e9"))[0] is Verdict.DUPLICATE


def test_personal_channel_without_a_position_is_accepted_before_its_first_reply() -> None:
    p = Positions()
    p.track("user:me", auto=True)
    p.new_connection()
    p.subscribe_request("user:me")
    assert p.accept(msg("user:me", "5-0"))[0] is Verdict.DELIVER  # nothing to resume: live already
    p.on_subscribed(Subscribed("user:me", "e1", "7-0", False, 0))
    assert p.get("user:me").position == pos("7-0")  # type: ignore[union-attr]


def test_unknown_channels_are_dropped_and_since_seeds_a_position() -> None:
    p = Positions()
    assert p.accept(msg("room:x", "1-0"))[0] is Verdict.UNKNOWN
    p.track("room:b", since=pos("4-0"), wanted=True)
    assert p.subscribe_request("room:b")["since"] == {"offset": "4-0", "epoch": "e1"}
    assert p.on_subscribed(Subscribed("room:b", "e1", "9-0", True, 5)) is None
    assert p.get("room:b").position == pos("4-0")  # type: ignore[union-attr]  # missed ones follow


def test_sse_cursor_positions_round_trip_and_move_only_forward() -> None:
    p = Positions()
    for ch in ("user:me", "room:a", "room:b"):
        p.track(ch, wanted=True)
    p.stream_opened(["user:me", "room:a", "room:b"])
    server_cursor = encode_cursor({"user:me": pos("0-0"), "room:a": pos("5-0"), "room:b": pos("7-0")})
    p.apply_cursor(server_cursor)
    assert p.snapshot()["room:a"] == pos("5-0")
    assert p.accept(msg("room:a", "5-0"))[0] is Verdict.DUPLICATE
    p.apply_cursor(encode_cursor({"room:a": pos("3-0")}))  # behind: ignored
    assert p.snapshot()["room:a"] == pos("5-0")
    assert decode_cursor(p.cursor()) == {channel_tag(ch): q for ch, q in p.snapshot().items()}
    p.apply_cursor("garbage that is not a cursor")  # ignored, not raised


def test_sse_recovery_event_yields_one_resync_per_channel() -> None:
    p = Positions()
    p.track("room:a", since=pos("5-0"), wanted=True)
    p.stream_opened(["room:a"])
    resyncs = p.recovery(["room:a", "room:gone"], encode_cursor({"room:a": pos("9-0", "e2")}))
    assert resyncs == [Resync("room:a", pos("5-0"), "e2", "9-0")]
    assert p.snapshot()["room:a"] == pos("9-0", "e2")


def test_cursor_stays_within_one_kib() -> None:
    p = Positions()
    for i in range(60):
        p.track(f"room:c{i}", since=pos(f"1732560000{i:03d}-0", "k3v9abcd"), wanted=True)
    assert len(p.cursor()) <= 1024
    assert len(decode_cursor(p.cursor())) >= 20


@pytest.mark.parametrize("split", [1, 2, 3, 7, 1000])
def test_event_stream_parser_handles_any_chunking(split: int) -> None:
    raw = (
        b'retry: 2000\n: herald abc\n\nid: c1\nevent: chat\ndata: {"a":1}\n\n'
        b"data: line1\r\ndata: line2\r\n\r\n: hb\n\nid: c2\n\n"
    )
    parser = EventStreamParser()
    items = []
    for i in range(0, len(raw), split):
        items += parser.feed(raw[i : i + split])
    assert items == [
        SseComment("herald abc"),
        SseEvent("chat", '{"a":1}', "c1"),
        SseEvent("message", "line1\nline2", "c1"),
        SseComment("hb"),
    ]
    assert parser.retry_ms == 2000
    assert parser.last_event_id == "c2"  # an id without data moves the cursor, dispatches nothing
