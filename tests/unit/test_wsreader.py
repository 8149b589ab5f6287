"""The client → server frame reader (core/protocol/wsreader.py), bytes only, against RFC 6455 §5
and wsproto as the reference parser.

Frames are built by hand here (`client_frame`, RFC 6455 §5.2) so that invalid ones can be built
too; that builder is itself checked against wsproto's parser, and wsproto's client is used as an
independent producer of valid frames.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from herald.core.protocol.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, ws_frame
from herald.core.protocol.wsreader import FrameError, FrameReader, close_payload

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BIG = 1 << 20  # a size limit the property tests never reach

Event = tuple[int, Any]

# ==============================================================================================
# Building and parsing frames
# ==============================================================================================


def client_frame(
    op: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bytes = b"\x37\xfa\x21\x3d",
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame (RFC 6455 §5.2), shortest length encoding unless `length` is forced."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", b0, bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, n)
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def close_frame(code: int | None, reason: bytes = b"", **kw: Any) -> bytes:
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return client_frame(OP_CLOSE, payload, **kw)


def feed_chunks(reader: FrameReader, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += reader.feed(chunk)
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def reference(data: bytes) -> list[Event]:
    """What wsproto's server-side parser makes of `data`, in FrameReader's event shape; raises
    ParseFailed like wsproto does."""
    proto = FrameProtocol(client=False, extensions=[])
    proto.receive_bytes(data)
    events: list[Event] = []
    parts: list[Any] = []
    for frame in proto.received_frames():
        payload: Any = frame.payload
        if frame.opcode in (Opcode.PING, Opcode.PONG):
            events.append((int(frame.opcode), bytes(payload)))
        elif frame.opcode is Opcode.CLOSE:
            code, reason = payload
            events.append((OP_CLOSE, (None if code == 1005 else int(code), reason)))
            break
        else:
            parts.append(frame.payload)
            if frame.message_finished:
                if frame.opcode is Opcode.TEXT:
                    events.append((OP_TEXT, "".join(parts)))
                else:
                    events.append((OP_BINARY, b"".join(bytes(p) for p in parts)))
                parts = []
    return events


def error_code(data: bytes, max_size: int = BIG) -> int | None:
    try:
        FrameReader(max_size).feed(data)
    except FrameError as exc:
        return exc.code
    return None


def reference_error_code(data: bytes) -> int | None:
    try:
        reference(data)
    except ParseFailed as exc:
        return int(exc.code)
    return None


# ==============================================================================================
# Strategies: valid streams of messages, fragments and control frames
# ==============================================================================================

masks = st.binary(min_size=4, max_size=4)
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
control_payloads = st.binary(max_size=125)


@st.composite
def streams(draw: st.DrawFn, max_messages: int = 6) -> tuple[bytes, list[Event]]:
    """(bytes of a valid client stream, the events it must decode to): text (non-ASCII included)
    and binary messages, each cut into fragments at arbitrary byte offsets (so a multi-byte
    character may straddle two frames), with pings and pongs between and inside messages."""
    frames: list[bytes] = []
    expected: list[Event] = []

    def control() -> None:
        op = draw(st.sampled_from([OP_PING, OP_PONG]))
        payload = draw(control_payloads)
        frames.append(client_frame(op, payload, mask=draw(masks)))
        expected.append((op, payload))

    for _ in range(draw(st.integers(0, max_messages))):
        kind = draw(st.sampled_from(["text", "binary", "control"]))
        if kind == "control":
            control()
            continue
        value: str | bytes = draw(texts) if kind == "text" else draw(st.binary(max_size=300))
        raw = value.encode() if isinstance(value, str) else value
        pieces = split(raw, draw(st.lists(st.integers(0, len(raw)), max_size=4)))
        for i, piece in enumerate(pieces):
            op = (OP_TEXT if kind == "text" else OP_BINARY) if i == 0 else OP_CONT
            frames.append(client_frame(op, piece, fin=i == len(pieces) - 1, mask=draw(masks)))
            if i < len(pieces) - 1 and draw(st.booleans()):
                control()  # a control frame in the middle of a fragmented message
        expected.append((OP_TEXT if kind == "text" else OP_BINARY, value))
    return b"".join(frames), expected


# ==============================================================================================
# Valid streams: the same messages as wsproto, whatever the chunk boundaries
# ==============================================================================================


@FUZZ
@given(streams(), st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_decodes_to_the_messages_wsproto_decodes(
    stream: tuple[bytes, list[Event]], cuts: list[int]
) -> None:
    """Random messages split at random chunk boundaries decode to exactly what was sent, in order."""
    data, expected = stream
    reader = FrameReader(BIG)
    assert feed_chunks(reader, split(data, cuts)) == expected == reference(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(max_messages=4))
def test_feeding_one_byte_at_a_time_decodes_the_same_messages(stream: tuple[bytes, list[Event]]) -> None:
    """The worst segmentation: every byte in its own feed() call."""
    data, expected = stream
    reader = FrameReader(BIG)
    assert feed_chunks(reader, [data[i : i + 1] for i in range(len(data))]) == expected


@FUZZ
@given(streams(), st.lists(st.integers(min_value=0), max_size=10))
def test_an_idle_reader_holds_no_bytes_between_complete_messages(
    stream: tuple[bytes, list[Event]], cuts: list[int]
) -> None:
    """Once every fed frame is complete the reader keeps no buffer and no fragments (an idle
    connection holds no parser state); in between it keeps only what is incomplete."""
    data, _expected = stream
    reader = FrameReader(BIG)
    feed_chunks(reader, split(data, cuts))
    assert reader._buf == b""
    assert reader._msg is None
    # half a frame is kept, and nothing more
    frame = client_frame(OP_BINARY, b"abcdef")
    assert reader.feed(frame[:5]) == []
    assert reader._buf == frame[:5]
    assert reader.feed(frame[5:]) == [(OP_BINARY, b"abcdef")]
    assert reader._buf == b"" and reader._msg is None


@FUZZ
@given(st.lists(st.tuples(texts, st.integers(1, 4)), max_size=5), st.lists(st.integers(min_value=0), max_size=10))
def test_frames_made_by_the_wsproto_client_decode(messages: list[tuple[str, int]], cuts: list[int]) -> None:
    """An independent producer: wsproto's client fragments text at character boundaries, masks
    with random keys and sends pings; everything decodes."""
    client = FrameProtocol(client=True, extensions=[])
    data = bytearray()
    expected: list[Event] = []
    for text, n in messages:
        step = max(1, len(text) // n)
        chunks = [text[i : i + step] for i in range(0, len(text), step)] or [""]
        for i, chunk in enumerate(chunks):
            data += client.send_data(chunk, fin=i == len(chunks) - 1)
        data += client.ping(text.encode()[:125])
        expected += [(OP_TEXT, text), (OP_PING, text.encode()[:125])]
    data += client.close(4000, "bye")
    expected.append((OP_CLOSE, (4000, "bye")))
    assert feed_chunks(FrameReader(BIG), split(bytes(data), cuts)) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_encoding_is_read(size: int) -> None:
    """7-bit, 16-bit and 64-bit payload lengths, at their boundaries."""
    payload = os.urandom(size)
    data = client_frame(OP_BINARY, payload) + client_frame(OP_TEXT, b"end")
    assert FrameReader(BIG).feed(data) == [(OP_BINARY, payload), (OP_TEXT, "end")] == reference(data)


def test_a_multibyte_character_straddling_two_fragments_is_valid_text() -> None:
    """'é' (C3 A9) and '€' (E2 82 AC) cut inside their encodings, across three frames."""
    raw = "é€".encode()
    data = (
        client_frame(OP_TEXT, raw[:1], fin=False)
        + client_frame(OP_CONT, raw[1:3], fin=False)
        + client_frame(OP_PING, b"p")
        + client_frame(OP_CONT, raw[3:])
    )
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        assert feed_chunks(FrameReader(BIG), chunks) == [(OP_PING, b"p"), (OP_TEXT, "é€")]


# ==============================================================================================
# Size limit: 1009 from the header, before the payload is buffered
# ==============================================================================================


def test_a_message_at_the_limit_is_read_and_one_byte_more_is_1009() -> None:
    assert FrameReader(100).feed(client_frame(OP_BINARY, b"x" * 100)) == [(OP_BINARY, b"x" * 100)]
    with pytest.raises(FrameError) as info:
        FrameReader(100).feed(client_frame(OP_BINARY, b"x" * 101))
    assert info.value.code == 1009


@pytest.mark.parametrize("length", [101, 200, 65536, 1 << 40, (1 << 63) - 1])
def test_an_oversized_frame_is_refused_from_its_header_alone(length: int) -> None:
    """Only the 2-10 header bytes are fed (not even the mask): 1009 is raised at once."""
    header = client_frame(OP_TEXT, b"", length=length)[:-4]  # without the masking key
    with pytest.raises(FrameError) as info:
        FrameReader(100).feed(header)
    assert info.value.code == 1009


@FUZZ
@given(st.lists(st.integers(0, 60), min_size=1, max_size=6), st.integers(1, 200))
def test_the_limit_applies_to_the_whole_fragmented_message(sizes: list[int], limit: int) -> None:
    """Fragments add up: 1009 as soon as the headers seen so far exceed the limit, else the message."""
    frames = [
        client_frame(OP_BINARY if i == 0 else OP_CONT, b"y" * n, fin=i == len(sizes) - 1) for i, n in enumerate(sizes)
    ]
    reader = FrameReader(limit)
    total = 0
    for frame, n in zip(frames, sizes):
        total += n
        if total > limit:
            with pytest.raises(FrameError) as info:
                reader.feed(frame[:2])  # the header of the fragment that crosses the limit
            assert info.value.code == 1009
            return
        got = reader.feed(frame)
    assert got == [(OP_BINARY, b"y" * total)]


def test_the_size_of_one_message_does_not_count_against_the_next() -> None:
    reader = FrameReader(10)
    for _ in range(5):
        assert reader.feed(client_frame(OP_TEXT, b"a" * 5, fin=False) + client_frame(OP_CONT, b"b" * 5)) == [
            (OP_TEXT, "a" * 5 + "b" * 5)
        ]


def test_control_frames_do_not_count_against_the_message_size() -> None:
    reader = FrameReader(10)
    data = (
        client_frame(OP_TEXT, b"a" * 5, fin=False) + client_frame(OP_PING, b"p" * 100) + client_frame(OP_CONT, b"b" * 5)
    )
    assert reader.feed(data) == [(OP_PING, b"p" * 100), (OP_TEXT, "a" * 5 + "b" * 5)]


# ==============================================================================================
# Protocol errors: 1002
# ==============================================================================================


def _assert_1002(data: bytes) -> None:
    with pytest.raises(FrameError) as info:
        FrameReader(BIG).feed(data)
    assert info.value.code == 1002, info.value.reason
    assert reference_error_code(data) == 1002  # wsproto agrees that this stream is broken


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE])
def test_an_unmasked_frame_is_1002(op: int) -> None:
    _assert_1002(client_frame(op, b"hi", masked=False))


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
@pytest.mark.parametrize("op", [OP_TEXT, OP_PING])
def test_reserved_bits_without_an_extension_are_1002(rsv: int, op: int) -> None:
    _assert_1002(client_frame(op, b"hi", rsv=rsv))


@pytest.mark.parametrize("op", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_an_unknown_opcode_is_1002(op: int) -> None:
    _assert_1002(client_frame(op, b"hi"))


@pytest.mark.parametrize("op", [OP_PING, OP_PONG, OP_CLOSE])
def test_a_fragmented_control_frame_is_1002(op: int) -> None:
    _assert_1002(client_frame(op, b"\x03\xe8", fin=False))


@pytest.mark.parametrize("op", [OP_PING, OP_PONG, OP_CLOSE])
def test_a_control_frame_over_125_bytes_is_1002(op: int) -> None:
    _assert_1002(client_frame(op, b"\x03\xe8" + b"x" * 124))
    # refused from the header, before the payload
    with pytest.raises(FrameError) as info:
        FrameReader(BIG).feed(client_frame(op, b"x" * 126)[:4])
    assert info.value.code == 1002


def test_a_control_frame_of_exactly_125_bytes_is_fine() -> None:
    assert FrameReader(BIG).feed(client_frame(OP_PING, b"x" * 125)) == [(OP_PING, b"x" * 125)]


def test_a_continuation_without_a_message_is_1002() -> None:
    _assert_1002(client_frame(OP_CONT, b"hi"))
    _assert_1002(client_frame(OP_TEXT, b"a") + client_frame(OP_CONT, b"b"))  # after a complete message


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY])
def test_a_new_message_inside_a_fragmented_one_is_1002(op: int) -> None:
    _assert_1002(client_frame(OP_TEXT, b"a", fin=False) + client_frame(op, b"b"))


def test_a_64_bit_length_with_the_top_bit_set_is_1002() -> None:
    header = client_frame(OP_BINARY, b"", length=1 << 63)[:-4]
    with pytest.raises(FrameError) as info:
        FrameReader(1 << 64).feed(header)
    assert info.value.code == 1002


@FUZZ
@given(streams(max_messages=3), st.integers(min_value=0), st.sampled_from(["mask", "rsv", "opcode", "cont"]))
def test_one_bad_frame_after_valid_ones_is_refused_like_wsproto_does(
    stream: tuple[bytes, list[Event]], pick: int, fault: str
) -> None:
    """Whatever came before, the first broken frame is a 1002, as wsproto says too."""
    data, _ = stream
    bad = {
        "mask": client_frame(OP_TEXT, b"x", masked=False),
        "rsv": client_frame(OP_BINARY, b"x", rsv=1 + pick % 7),
        "opcode": client_frame([3, 4, 5, 6, 7, 11, 12, 13, 14, 15][pick % 10], b"x"),
        "cont": client_frame(OP_CONT, b"x"),
    }[fault]
    with pytest.raises(FrameError) as info:
        feed_chunks(FrameReader(BIG), split(data + bad, [pick]))
    assert info.value.code == 1002 == reference_error_code(data + bad)


# ==============================================================================================
# UTF-8: 1007 only when the text really is invalid
# ==============================================================================================


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"ok\x80"],
    ids=[
        "ff",
        "truncated-2",
        "bad-continuation",
        "truncated-3",
        "surrogate",
        "overlong",
        "over-max",
        "stray-continuation",
    ],
)
def test_invalid_utf8_text_is_1007(raw: bytes) -> None:
    data = client_frame(OP_TEXT, raw)
    with pytest.raises(FrameError) as info:
        FrameReader(BIG).feed(data)
    assert info.value.code == 1007
    assert reference_error_code(data) == 1007


def test_invalid_utf8_is_not_a_problem_in_a_binary_message() -> None:
    assert FrameReader(BIG).feed(client_frame(OP_BINARY, b"\xff\xc3")) == [(OP_BINARY, b"\xff\xc3")]


@FUZZ
@given(
    st.binary(max_size=40),
    st.lists(st.integers(min_value=0), max_size=3),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_text_is_1007_exactly_when_wsproto_finds_it_invalid(raw: bytes, frags: list[int], cuts: list[int]) -> None:
    """Random bytes as a (fragmented) text message: valid or 1007, the same verdict as wsproto's."""
    pieces = split(raw, frags)
    data = b"".join(
        client_frame(OP_TEXT if i == 0 else OP_CONT, p, fin=i == len(pieces) - 1) for i, p in enumerate(pieces)
    )
    try:
        got: list[Event] | int = feed_chunks(FrameReader(BIG), split(data, cuts))
    except FrameError as exc:
        got = exc.code
    try:
        want: list[Event] | int = reference(data)
    except ParseFailed as exc:
        want = int(exc.code)
    assert got == want


@FUZZ
@given(texts.filter(lambda t: any(ord(c) > 0x7F for c in t)), st.data())
def test_valid_text_cut_inside_a_character_is_never_1007(text: str, data: st.DataObject) -> None:
    raw = text.encode()
    inside = [i for i in range(1, len(raw)) if raw[i] & 0xC0 == 0x80]  # offsets inside a character
    cut = data.draw(st.sampled_from(inside))
    frames = client_frame(OP_TEXT, raw[:cut], fin=False) + client_frame(OP_CONT, raw[cut:])
    assert FrameReader(BIG).feed(frames) == [(OP_TEXT, text)]


# ==============================================================================================
# Close frames
# ==============================================================================================


def test_an_empty_close_frame_has_no_code() -> None:
    assert FrameReader(BIG).feed(close_frame(None)) == [(OP_CLOSE, (None, ""))]


def test_a_one_byte_close_payload_is_1002() -> None:
    _assert_1002(client_frame(OP_CLOSE, b"\x03"))


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_a_close_code_a_peer_may_not_send_is_1002(code: int) -> None:
    with pytest.raises(FrameError) as info:
        FrameReader(BIG).feed(close_frame(code))
    assert info.value.code == 1002


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 3999, 4000, 4999]
)
def test_a_valid_close_code_and_its_utf8_reason_are_returned(code: int) -> None:
    assert FrameReader(BIG).feed(close_frame(code, "au revoir, ça va".encode())) == [
        (OP_CLOSE, (code, "au revoir, ça va"))
    ]


def test_a_close_reason_that_is_not_utf8_is_1007() -> None:
    data = close_frame(1000, b"\xff\xfe")
    with pytest.raises(FrameError) as info:
        FrameReader(BIG).feed(data)
    assert info.value.code == 1007 == reference_error_code(data)


@pytest.mark.parametrize(
    "after",
    [
        client_frame(OP_TEXT, b"late"),
        client_frame(OP_TEXT, b"x", masked=False),
        b"\xff\xff\xff garbage",
        client_frame(OP_CONT, b"x"),
    ],
    ids=["message", "unmasked", "garbage", "continuation"],
)
def test_nothing_after_a_close_frame_is_returned_or_parsed(after: bytes) -> None:
    """Frames (or junk) behind the close frame in the same read are ignored, not errors."""
    data = client_frame(OP_TEXT, b"before") + close_frame(1000) + after
    for chunks in ([data], split(data, [len(data) - len(after) - 1])):
        assert feed_chunks(FrameReader(BIG), chunks) == [(OP_TEXT, "before"), (OP_CLOSE, (1000, ""))]


def test_a_close_frame_inside_a_fragmented_message_ends_it() -> None:
    data = client_frame(OP_TEXT, b"half", fin=False) + close_frame(1001)
    reader = FrameReader(BIG)
    assert reader.feed(data) == [(OP_CLOSE, (1001, ""))]
    assert reader._buf == b"" and reader._msg is None


# ==============================================================================================
# close_payload: what the server puts in its own close frames
# ==============================================================================================


def test_close_payload_is_the_code_and_the_reason() -> None:
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(4008, "slow consumer") == b"\x0f\xa8slow consumer"


@FUZZ
@given(st.integers(1000, 4999), texts | st.text(alphabet="é€😀a", min_size=100, max_size=200))
def test_close_payload_fits_a_control_frame_and_never_splits_a_character(code: int, reason: str) -> None:
    payload = close_payload(code, reason)
    assert len(payload) <= 125
    assert int.from_bytes(payload[:2], "big") == code
    kept = payload[2:].decode("utf-8")  # raises if a character was cut
    assert reason.startswith(kept)
    assert kept == reason or len(reason[: len(kept) + 1].encode()) > 123  # nothing dropped that would fit


@pytest.mark.parametrize(
    "reason,kept",
    [
        ("a" * 123, 123),
        ("a" * 124, 123),
        ("a" * 122 + "é", 122),
        ("a" * 121 + "é", 123),
        ("a" * 121 + "😀", 121),
        ("😀" * 40, 120),
    ],
)
def test_close_payload_truncation_at_the_123_byte_boundary(reason: str, kept: int) -> None:
    payload = close_payload(1000, reason)
    assert len(payload) - 2 == kept
    # the frame a server builds from it is a valid close frame by wsproto's account
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(ws_frame(OP_CLOSE, payload))
    (event,) = list(client.received_frames())
    assert event.payload == (1000, reason.encode()[:kept].decode())


# ==============================================================================================
# Hostile clients (issue 16): what a message in progress may cost
# ==============================================================================================

from herald.core.protocol.wsreader import MAX_AUTH_MESSAGE, MAX_FRAGMENTS  # noqa: E402


def fragments(n: int, size: int = 0, *, fin: bool = True, op: int = OP_TEXT) -> bytes:
    """One message in `n` frames of `size` payload bytes each (the last final if `fin`)."""
    return b"".join(client_frame(op if i == 0 else OP_CONT, b"a" * size, fin=fin and i == n - 1) for i in range(n))


def test_a_message_of_max_fragments_frames_is_read() -> None:
    reader = FrameReader(BIG)
    assert reader.feed(fragments(MAX_FRAGMENTS, 3)) == [(OP_TEXT, "a" * 3 * MAX_FRAGMENTS)]


def test_one_fragment_more_than_the_bound_is_1009_even_when_empty() -> None:
    """Empty continuation frames add no bytes, but they are frames: the bound counts them."""
    reader = FrameReader(BIG)
    assert reader.feed(fragments(MAX_FRAGMENTS, fin=False)) == []
    with pytest.raises(FrameError) as err:
        reader.feed(client_frame(OP_CONT, b"", fin=True))
    assert err.value.code == 1009


def test_an_empty_fragment_flood_is_refused_after_the_bound_whatever_the_chunking() -> None:
    reader = FrameReader(BIG)
    flood = client_frame(OP_TEXT, b"", fin=False) + client_frame(OP_CONT, b"", fin=False) * (MAX_FRAGMENTS * 4)
    with pytest.raises(FrameError) as err:
        feed_chunks(reader, [flood[i : i + 1000] for i in range(0, len(flood), 1000)])
    assert err.value.code == 1009


def test_the_fragment_count_of_one_message_does_not_count_against_the_next() -> None:
    reader = FrameReader(BIG)
    for _ in range(3):
        assert reader.feed(fragments(MAX_FRAGMENTS, 1)) == [(OP_TEXT, "a" * MAX_FRAGMENTS)]


def test_control_frames_inside_a_message_are_not_fragments() -> None:
    reader = FrameReader(BIG)
    data = client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_PING, b"") * (MAX_FRAGMENTS * 2)
    data += client_frame(OP_CONT, b"b", fin=True)
    events = reader.feed(data)
    assert events[-1] == (OP_TEXT, "ab") and len(events) == MAX_FRAGMENTS * 2 + 1


def test_a_message_in_progress_is_held_in_one_buffer_no_larger_than_its_payload() -> None:
    """Memory held for a message in progress is its payload (not one object per fragment)."""
    reader = FrameReader(65_536)
    reader.feed(fragments(MAX_FRAGMENTS, 64, fin=False))
    assert isinstance(reader._msg, bytearray)
    assert len(reader._msg) == 64 * MAX_FRAGMENTS
    assert reader._msg.__sizeof__() < 2 * 65_536


def test_the_first_message_limit_applies_to_the_first_message_only() -> None:
    reader = FrameReader(65_536, first_max_size=MAX_AUTH_MESSAGE)
    assert reader.feed(client_frame(OP_TEXT, b"a" * MAX_AUTH_MESSAGE)) == [(OP_TEXT, "a" * MAX_AUTH_MESSAGE)]
    big = b"b" * 65_536
    assert reader.feed(client_frame(OP_BINARY, big)) == [(OP_BINARY, big)]


@pytest.mark.parametrize("frames", [1, 2, 100])
def test_a_first_message_over_its_limit_is_1009_from_the_headers(frames: int) -> None:
    reader = FrameReader(65_536, first_max_size=MAX_AUTH_MESSAGE)
    size = MAX_AUTH_MESSAGE // frames + 1
    data = fragments(frames, size)
    with pytest.raises(FrameError) as err:
        reader.feed(data[: len(data) - size])  # the payload of the last frame is never needed
    assert err.value.code == 1009
