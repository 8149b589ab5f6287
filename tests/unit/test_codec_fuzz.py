"""Property tests: no input escapes the codecs, parse_command or Session.receive as anything but a
ProtocolError (or a contract reply), and codecs round-trip JSON-compatible values."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.core.protocol.codec import JSON, MSGPACK, JsonCodec, MsgpackCodec, codec_for_subprotocol
from herald.core.protocol.envelope import (
    Auth,
    Chat,
    History,
    Ping,
    Presence,
    Publish,
    Refresh,
    Subscribe,
    Unsubscribe,
    Who,
    parse_command,
)
from herald.core.protocol.errors import ProtocolError
from herald.core.protocol.session import Session, SessionLimits, State
from tests.unit._support import AUTH, NOW, OPEN_ERROR_CODES, REPLY_TYPES, decode_frame, make_principal, make_token

COMMAND_TYPES = (Subscribe, Unsubscribe, Publish, Chat, Presence, Who, History, Refresh, Ping, Auth)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Structured values cost more per example; 200 keeps the unit suite well under 20 s.
FUZZ_VALUES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=15,
)
msgpack_scalars = json_scalars | st.binary(max_size=20)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=15,
)

# Command-shaped objects: real types and keys with arbitrary (often wrong) values, so the parser's
# per-field checks are reached rather than only the "not an object" branch.
_TYPES = st.sampled_from(
    ["subscribe", "unsubscribe", "publish", "chat", "presence", "who", "history", "refresh", "ping", "auth", "nope"]
)
_KEYS = st.sampled_from(["id", "channel", "since", "data", "event", "recipientId", "text", "status", "limit", "token"])
_channelish = st.sampled_from(["room:1", "user:alice", "user:bob", "lobby", "", "a" * 256, "room 1"]) | st.text(
    max_size=8
)
_field_values = (
    json_values
    | _channelish
    | st.fixed_dictionaries(
        {
            "offset": st.sampled_from(["1-0", "0-0", "x", "1"]) | st.text(max_size=6),
            "epoch": st.sampled_from(["e1", ""]) | st.text(max_size=6),
        }
    )
    | st.integers(min_value=-5, max_value=2**54)
)
command_like = st.builds(
    lambda t, extra: {"type": t, **extra},
    _TYPES,
    st.dictionaries(_KEYS, _field_values, max_size=5),
)


def _decode_and_parse(codec: Any, payload: bytes | str) -> None:
    try:
        cmd = parse_command(codec.decode(payload))
    except ProtocolError as exc:
        assert exc.code == 400
    else:
        assert isinstance(cmd, COMMAND_TYPES)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_json_codec_and_parser_raise_only_protocol_errors_on_any_input(payload: bytes | str) -> None:
    """Any text or bytes fed to JsonCodec.decode + parse_command yields a Command or a ProtocolError."""
    _decode_and_parse(JsonCodec(), payload)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_msgpack_codec_and_parser_raise_only_protocol_errors_on_any_input(payload: bytes | str) -> None:
    """Any text or bytes fed to MsgpackCodec.decode + parse_command yields a Command or a ProtocolError."""
    _decode_and_parse(MsgpackCodec(), payload)


@FUZZ_VALUES
@given(json_values | command_like)
def test_parser_raises_only_protocol_errors_on_any_decoded_json_value(obj: Any) -> None:
    """Any JSON value, including command-shaped objects with wrong fields, parses or raises ProtocolError."""
    _decode_and_parse(JSON, orjson.dumps(obj).decode())


@FUZZ_VALUES
@given(msgpack_values | command_like)
def test_parser_raises_only_protocol_errors_on_any_decoded_msgpack_value(obj: Any) -> None:
    """Any msgpack value, including command-shaped maps with wrong fields, parses or raises ProtocolError."""
    _decode_and_parse(MSGPACK, MSGPACK.encode(obj))


@FUZZ_VALUES
@given(json_values)
def test_json_codec_round_trips_json_values(obj: Any) -> None:
    """JsonCodec.decode(JsonCodec.encode(x)) == x for JSON-compatible values."""
    assert JSON.decode(JSON.encode(obj).decode()) == obj


@FUZZ_VALUES
@given(json_values)
def test_msgpack_codec_round_trips_json_values(obj: Any) -> None:
    """MsgpackCodec.decode(MsgpackCodec.encode(x)) == x for JSON-compatible values."""
    assert MSGPACK.decode(MSGPACK.encode(obj)) == obj


def test_msgpack_values_without_a_json_equivalent_are_a_400() -> None:
    """bin, ext and non-string keys cannot be relayed to JSON subscribers: ProtocolError, not a crash."""
    import msgpack

    for payload in (
        msgpack.packb({"type": "publish", "channel": "a", "data": b"x"}, use_bin_type=True),
        msgpack.packb(msgpack.ExtType(5, b"x")),
        msgpack.packb({b"type": "ping"}, use_bin_type=True),
    ):
        try:
            MSGPACK.decode(payload)
        except ProtocolError as exc:
            assert exc.code == 400
        else:
            raise AssertionError(f"accepted {payload!r}")


def test_msgpack_codec_decodes_what_it_encodes_for_a_plain_command() -> None:
    """A msgpack-encoded ping decodes back to the same map (the herald.msgpack subprotocol works)."""
    obj = {"type": "subscribe", "channel": "room:1", "id": 3, "since": {"offset": "1-0", "epoch": "e"}}
    assert MSGPACK.decode(MSGPACK.encode(obj)) == obj
    assert parse_command(MSGPACK.decode(MSGPACK.encode({"type": "ping"}))) == Ping(None)


def test_each_codec_rejects_the_other_frame_kind() -> None:
    """Binary frames need herald.msgpack and text frames herald.json: both are a 400, not a crash."""
    for codec, payload in ((JSON, b'{"type":"ping"}'), (MSGPACK, '{"type":"ping"}')):
        try:
            codec.decode(payload)
        except ProtocolError as exc:
            assert exc.code == 400
        else:
            raise AssertionError(f"{codec.name} accepted the wrong frame kind")


def test_subprotocol_selects_the_codec_with_json_as_default() -> None:
    """herald.msgpack selects msgpack (binary opcode); anything else selects JSON (text opcode)."""
    assert codec_for_subprotocol("herald.msgpack") is MSGPACK and MSGPACK.opcode == 2
    assert codec_for_subprotocol(None) is JSON and JSON.opcode == 1
    assert codec_for_subprotocol("herald.json") is JSON


# --- Session.receive ----------------------------------------------------------------------

_PRINCIPAL = make_principal("alice", channels=["room:*", "lobby"], publish=["room:*"])
_TOKENS = st.sampled_from(
    [
        make_token("alice"),  # valid refresh
        make_token("bob"),  # another user
        make_token("alice", exp=int(NOW) - 1),  # expired
        make_token("alice", secret="x" * 32),  # wrong key
        "not-a-jwt",
    ]
)
_objects = (
    json_values
    | command_like
    | st.builds(lambda t, tok: {"type": t, "token": tok, "id": 1}, st.sampled_from(["refresh", "auth"]), _TOKENS)
)
#: ("raw", payload) is fed as is; ("obj", value) is encoded with the session's codec first.
session_inputs = st.tuples(st.just("raw"), st.binary(max_size=100) | st.text(max_size=100)) | st.tuples(
    st.just("obj"), _objects
)


def _run_session(codec: Any, inputs: list[tuple[str, Any]]) -> None:
    limits = SessionLimits(client_burst=4, client_rate=10.0)
    session = Session("c1", "n1", codec, limits, _verify, NOW, principal=_PRINCIPAL)
    session.frames_to_send()
    for i, (kind, value) in enumerate(inputs):
        payload = value if kind == "raw" else codec.encode(value)
        if codec is JSON and isinstance(payload, bytes) and kind == "obj":
            payload = payload.decode()
        session.receive(payload, NOW + i * 0.01)
        assert session.state is State.OPEN
        for frame in session.frames_to_send():
            reply = decode_frame(frame)
            assert isinstance(reply, dict) and reply.get("type") in REPLY_TYPES, reply
            if reply["type"] == "error":
                assert reply["code"] in OPEN_ERROR_CODES, reply


@FUZZ_VALUES
@given(st.lists(session_inputs, min_size=1, max_size=6))
def test_json_session_receive_never_raises_and_only_queues_contract_frames(inputs: list[tuple[str, Any]]) -> None:
    """Arbitrary payloads to an open herald.json session never raise; queued frames are contract
    replies or errors with a connection-keeping code (400, 403, 413, 429)."""
    _run_session(JSON, inputs)


@FUZZ_VALUES
@given(st.lists(session_inputs, min_size=1, max_size=6))
def test_msgpack_session_receive_never_raises_and_only_queues_contract_frames(inputs: list[tuple[str, Any]]) -> None:
    """Arbitrary payloads to an open herald.msgpack session never raise; queued frames are contract
    replies or errors with a connection-keeping code (400, 403, 413, 429)."""
    _run_session(MSGPACK, inputs)


def _verify(token: str, now: float) -> Any:
    return AUTH.verify(token, now)
