"""The SSE resume cursor and the per-stream event framing (CONTRACT §6), without I/O."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from herald.core.protocol.envelope import Position, offset_key
from herald.core.protocol.errors import ProtocolError
from herald.core.protocol.sse import MAX_CURSOR, SseStream, channel_tag, decode_cursor, encode_cursor, event_tail
from tests.unit._support import history, pub

MS = 1_700_000_000_000

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
channels = st.text(alphabet=_ALNUM + "_-:.@/=", min_size=1, max_size=255)
epochs = st.text(alphabet=_ALNUM + "_-", min_size=1, max_size=64)
offsets = st.builds(lambda ms, seq: f"{ms}-{seq}", st.integers(0, 10**19 - 1), st.integers(0, 10**19 - 1))
positions = st.builds(Position, offsets, epochs)


def off(seq: int) -> str:
    return f"{MS}-{seq}"


def split_event(event: bytes) -> tuple[bytes, bytes, dict]:
    """(cursor, event name, data object) of one rendered event."""
    lines = event.split(b"\n")
    assert lines[0].startswith(b"id: ") and lines[1].startswith(b"event: ") and lines[2].startswith(b"data: ")
    assert event.endswith(b"\n\n") and len(lines) == 5
    return lines[0][4:], lines[1][7:], orjson.loads(lines[2][6:])


# --- cursor encoding ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(channels, positions, min_size=0, max_size=6))
def test_a_cursor_round_trips_every_channel_position(pos: dict[str, Position]) -> None:
    """decode_cursor(encode_cursor(p)) gives each channel's position under its tag."""
    assume(len({channel_tag(ch) for ch in pos}) == len(pos))
    cursor = encode_cursor(pos)
    assert decode_cursor(cursor) == {channel_tag(ch): p for ch, p in pos.items()}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_text_as_cursor_decodes_or_raises_protocol_error(junk: str) -> None:
    """Arbitrary Last-Event-ID text never raises anything but ProtocolError."""
    try:
        decoded = decode_cursor(junk)
    except ProtocolError as exc:
        assert exc.code == 400
    else:
        assert all(isinstance(p, Position) for p in decoded.values())


def test_a_channel_tag_is_eight_stable_base32_characters() -> None:
    """Tags are short, stable and differ between channels."""
    tag = channel_tag("room:1")
    assert len(tag) == 8 and tag == channel_tag("room:1") and tag != channel_tag("room:2")
    assert set(tag) <= set("abcdefghijklmnopqrstuvwxyz234567")


def test_an_empty_cursor_means_no_positions() -> None:
    """An empty Last-Event-ID resumes nothing."""
    assert decode_cursor("") == {}


VALID = f"{channel_tag('room:1')}.e1.{off(3)}"


@pytest.mark.parametrize(
    "junk",
    [
        "hello",
        "x" * (MAX_CURSOR + 1),
        "~".join([VALID] * 40),  # well-formed entries, but over 1 KiB
        VALID.replace(".", "_"),
        VALID.replace(".", ",", 1),
        f"{VALID},{VALID}",
        f"{VALID};{VALID}",
        f"{VALID}~",
        f"~{VALID}",
        f"{VALID}~~{VALID}",
        VALID.upper(),
        f"{channel_tag('room:1')}.e1",
        f"{channel_tag('room:1')}..{off(3)}",
        f"{channel_tag('room:1')}.e.1.{off(3)}",
        f"{channel_tag('room:1')}.e1.{MS}",
        f"{channel_tag('room:1')}.e1.{MS}-x",
        f"{channel_tag('room:1')}.{'e' * 65}.{off(3)}",
        f"{channel_tag('room:1')[:7]}.e1.{off(3)}",
        f" {VALID}",
        f"{VALID}\n",
    ],
    ids=lambda j: repr(j[:40]),
)
def test_junk_cursors_are_rejected(junk: str) -> None:
    """Text that is not a Herald cursor, or is over 1 KiB, is a ProtocolError."""
    with pytest.raises(ProtocolError):
        decode_cursor(junk)


def test_a_cursor_for_sixteen_channels_fits_in_one_kib() -> None:
    """The largest stream (16 channels, long offsets) has a cursor under the 1 KiB limit."""
    pos = {f"room:{i}": Position(f"{10**18}-{10**18}", "epoch123") for i in range(16)}
    cursor = encode_cursor(pos)
    assert len(cursor.encode()) <= MAX_CURSOR
    assert len(decode_cursor(cursor)) == 16


# --- SseStream ----------------------------------------------------------------------------


def test_event_tail_has_event_and_data_lines_and_a_blank_line() -> None:
    """event_tail renders `event:` and `data:` lines ended by a blank line."""
    assert event_tail("chat", b'{"a":1}') == b'event: chat\ndata: {"a":1}\n\n'


def test_a_fresh_stream_sends_nothing_from_history_and_points_at_the_latest_offset() -> None:
    """start without since, complete: no events, recovered, cursor at the channel's latest offset."""
    s = SseStream()
    s.start("room:1", None)
    events, recovered = s.complete("room:1", history("room:1", offset=off(5), messages=[pub("room:1", 5)]), None)
    assert events == [] and recovered is True
    assert s.cursor() == f"{channel_tag('room:1')}.e1.{off(5)}".encode()


def test_deliver_prefixes_the_shared_tail_with_the_advanced_cursor() -> None:
    """deliver() returns `id: <cursor>\\n` + the shared tail, with the channel's offset advanced."""
    s = SseStream()
    s.start("room:1", None)
    s.complete("room:1", history("room:1", offset=off(5)), None)
    p = pub("room:1", 6)
    tail = event_tail(p.event, orjson.dumps(p.envelope()))
    out = s.deliver(p, tail)
    assert out == b"id: " + f"{channel_tag('room:1')}.e1.{off(6)}".encode() + b"\n" + tail
    assert s.msgs_out == 1


def test_deliver_dedupes_by_offset() -> None:
    """A repeated or older offset gives None and leaves the cursor alone."""
    s = SseStream()
    s.start("room:1", None)
    s.complete("room:1", history("room:1", offset=off(5)), None)
    p = pub("room:1", 6)
    tail = event_tail(p.event, orjson.dumps(p.envelope()))
    assert s.deliver(p, tail) is not None
    cursor = s.cursor()
    assert s.deliver(p, tail) is None
    assert s.deliver(pub("room:1", 5), tail) is None
    assert s.cursor() == cursor


def test_deliver_ignores_channels_not_in_the_stream() -> None:
    """A publication of another channel is not for this stream."""
    s = SseStream()
    s.start("room:1", None)
    assert s.deliver(pub("room:2", 1), b"") is None


def test_the_cursor_advances_per_channel() -> None:
    """With two channels, each event's cursor holds both positions, only the delivered one moving."""
    s = SseStream()
    for ch in ("room:1", "room:2"):
        s.start(ch, None)
        s.complete(ch, history(ch, offset=off(1)), None)
    first = s.deliver(pub("room:1", 2), b"t\n\n")
    second = s.deliver(pub("room:2", 7), b"t\n\n")
    assert first is not None and second is not None
    c1 = decode_cursor(first.split(b"\n")[0][4:].decode())
    c2 = decode_cursor(second.split(b"\n")[0][4:].decode())
    t1, t2 = channel_tag("room:1"), channel_tag("room:2")
    assert c1 == {t1: Position(off(2), "e1"), t2: Position(off(1), "e1")}
    assert c2 == {t1: Position(off(2), "e1"), t2: Position(off(7), "e1")}


def test_resume_sends_the_missed_events_then_the_buffered_ones_each_once() -> None:
    """With a recoverable since: missed events then live ones buffered during the read, no duplicate."""
    s = SseStream()
    since = Position(off(2), "e1")
    s.start("room:1", since)
    p6 = pub("room:1", 6)
    for p in (pub("room:1", 4), pub("room:1", 5), p6):
        assert s.deliver(p, b"ignored") is None  # recovering: buffered
    result = history(
        "room:1", offset=off(5), recovered=True, messages=[pub("room:1", 3), pub("room:1", 4), pub("room:1", 5)]
    )
    events, recovered = s.complete("room:1", result, since)
    assert recovered is True
    parsed = [split_event(e) for e in events]
    assert [d["offset"] for _, _, d in parsed] == [off(n) for n in (3, 4, 5, 6)]
    assert [decode_cursor(c.decode())[channel_tag("room:1")].offset for c, _, _ in parsed] == [
        off(n) for n in (3, 4, 5, 6)
    ]
    assert parsed[-1][2] == p6.envelope() and parsed[-1][1] == b"message"
    assert s.deliver(p6, b"x") is None
    assert s.deliver(pub("room:1", 7), b"x") is not None


def test_resume_from_a_cursor_continues_without_gap_or_duplicate() -> None:
    """A cursor taken from an event resumes a new stream right after that event."""
    s = SseStream()
    s.start("room:1", None)
    s.complete("room:1", history("room:1", offset=off(1)), None)
    event = s.deliver(pub("room:1", 2), b"t\n\n")
    assert event is not None
    positions = decode_cursor(event.split(b"\n")[0][4:].decode())
    since = positions[channel_tag("room:1")]
    again = SseStream()
    again.start("room:1", since)
    result = history(
        "room:1", offset=off(4), recovered=True, messages=[pub("room:1", 2), pub("room:1", 3), pub("room:1", 4)]
    )
    events, recovered = again.complete("room:1", result, since)
    assert recovered is True
    assert [split_event(e)[2]["offset"] for e in events] == [off(3), off(4)]


def test_resume_across_an_epoch_change_reports_not_recovered() -> None:
    """A since of a lost epoch: no events, recovered False, cursor at the new epoch's latest offset."""
    s = SseStream()
    since = Position(off(9), "e1")
    s.start("room:1", since)
    result = history(
        "room:1",
        epoch="e2",
        offset=off(2),
        recovered=False,
        messages=[pub("room:1", 1, epoch="e2"), pub("room:1", 2, epoch="e2")],
    )
    events, recovered = s.complete("room:1", result, since)
    assert events == [] and recovered is False
    assert decode_cursor(s.cursor().decode()) == {channel_tag("room:1"): Position(off(2), "e2")}
    assert s.deliver(pub("room:1", 3, epoch="e2"), b"t\n\n") is not None


def test_resume_with_a_differing_epoch_is_not_recovered_even_if_history_claims_it() -> None:
    """The stream itself compares epochs: a history of another epoch never counts as recovery."""
    s = SseStream()
    since = Position(off(9), "e1")
    s.start("room:1", since)
    events, recovered = s.complete("room:1", history("room:1", epoch="e2", offset=off(2), recovered=True), since)
    assert events == [] and recovered is False


def test_resume_with_incomplete_history_reports_not_recovered() -> None:
    """Same epoch but retention dropped messages: recovered False and no events."""
    s = SseStream()
    since = Position(off(1), "e1")
    s.start("room:1", since)
    result = history("room:1", offset=off(9), recovered=False, messages=[pub("room:1", 9)])
    events, recovered = s.complete("room:1", result, since)
    assert events == [] and recovered is False
    assert offset_key(decode_cursor(s.cursor().decode())[channel_tag("room:1")].offset) == (MS, 9)
