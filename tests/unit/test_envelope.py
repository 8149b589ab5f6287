"""parse_command, channel and offset rules, and the message envelope (CONTRACT §3-5)."""

from __future__ import annotations

from typing import Any

import pytest

from herald.core.protocol.envelope import (
    Auth,
    Chat,
    History,
    Ping,
    Position,
    Presence,
    Publication,
    Publish,
    Refresh,
    Subscribe,
    Unsubscribe,
    Who,
    namespace_of,
    offset_key,
    parse_command,
    personal_channel,
    validate_channel,
)
from herald.core.protocol.errors import HeraldError, ProtocolError

SINCE = {"offset": "1732560000123-0", "epoch": "k3v9"}


# --- valid commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"type": "subscribe", "channel": "room:42"}, Subscribe(None, "room:42", None)),
        (
            {"type": "subscribe", "channel": "room:42", "id": 7, "since": SINCE},
            Subscribe(7, "room:42", Position("1732560000123-0", "k3v9")),
        ),
        ({"type": "unsubscribe", "channel": "room:42", "id": 0}, Unsubscribe(0, "room:42")),
        ({"type": "publish", "channel": "room:42", "data": {"a": 1}}, Publish(None, "room:42", {"a": 1}, "message")),
        (
            {"type": "publish", "channel": "room:42", "data": None, "event": "chat", "id": 3},
            Publish(3, "room:42", None, "chat"),
        ),
        ({"type": "chat", "recipientId": "bob", "text": "hi", "id": 1}, Chat(1, "bob", "hi")),
        ({"type": "chat", "recipientId": "bob", "text": ""}, Chat(None, "bob", "")),
        ({"type": "presence", "status": "away", "id": 2}, Presence(2, "away")),
        ({"type": "who", "channel": "room:42"}, Who(None, "room:42")),
        ({"type": "history", "channel": "room:42"}, History(None, "room:42", None, None)),
        (
            {"type": "history", "channel": "room:42", "since": SINCE, "limit": 10, "id": 9},
            History(9, "room:42", Position("1732560000123-0", "k3v9"), 10),
        ),
        ({"type": "history", "channel": "room:42", "limit": 0}, History(None, "room:42", None, 0)),
        ({"type": "refresh", "token": "abc", "id": 4}, Refresh(4, "abc")),
        ({"type": "ping"}, Ping(None)),
        ({"type": "ping", "id": 2**53 - 1}, Ping(2**53 - 1)),
        ({"type": "auth", "token": "abc"}, Auth(None, "abc")),
    ],
    ids=lambda v: v.get("type") if isinstance(v, dict) else None,
)
def test_valid_commands_parse_into_their_typed_form(obj: dict[str, Any], expected: Any) -> None:
    """Every command of CONTRACT §5 parses, echoing `id` and carrying `since`."""
    assert parse_command(obj) == expected


def test_publish_data_may_be_any_json_value() -> None:
    """`data` is kept as given, whatever JSON value it is."""
    for data in (None, 0, "x", [1, [2]], {"deep": {"er": [True]}}, False):
        cmd = parse_command({"type": "publish", "channel": "a", "data": data})
        assert isinstance(cmd, Publish) and cmd.data == data


def test_unknown_extra_keys_are_ignored() -> None:
    """Keys the contract does not define do not make a command invalid."""
    assert parse_command({"type": "ping", "extra": [1, 2]}) == Ping(None)


# --- invalid commands ---------------------------------------------------------------------


def _rejects(obj: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_command(obj)
    assert info.value.code == 400
    return info.value


@pytest.mark.parametrize("obj", [None, 1, 1.5, "ping", ["type", "ping"], True, b"{}"])
def test_a_message_that_is_not_an_object_is_a_400(obj: Any) -> None:
    """Non-object messages raise ProtocolError (400)."""
    _rejects(obj)


@pytest.mark.parametrize("kind", [None, "", "Subscribe", "subscribed", "message", "x" * 100, 1, ["ping"], {"a": 1}])
def test_an_unknown_or_missing_type_is_a_400(kind: Any) -> None:
    """A missing, non-string or unknown `type` raises ProtocolError (400)."""
    obj = {} if kind is None else {"type": kind}
    _rejects(obj)


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "publish", "who", "history"])
def test_a_channel_command_without_a_channel_is_a_400(kind: str) -> None:
    """Commands that name a channel require it."""
    _rejects({"type": kind, "data": 1})


BAD_CHANNELS = [
    "",
    "a" * 256,
    "room 42",
    " room",
    "room:4\n",
    "caf\u00e9",
    "\u0440\u0443\u0441",
    "room#1",
    "room:42?",
    "a*b",
    "a,b",
    "a\x00",
    "\u0661\u0662",
    42,
    None,
    ["room"],
    {"c": 1},
]


@pytest.mark.parametrize("channel", BAD_CHANNELS, ids=repr)
@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "publish", "who", "history"])
def test_invalid_channel_names_are_a_400(kind: str, channel: Any) -> None:
    """Channel names outside 1-255 of `A-Za-z0-9_-:.@/=` are rejected by every channel command."""
    _rejects({"type": kind, "channel": channel, "data": 1})


@pytest.mark.parametrize(
    "channel", ["a", "a" * 255, "_-:.@/=", "Room:42/x=y@host.example-1_2", "user:alice", "::", "0"]
)
def test_valid_edge_channel_names_are_accepted(channel: str) -> None:
    """One and 255 characters, and every allowed punctuation mark, are valid."""
    assert validate_channel(channel) == channel
    assert parse_command({"type": "subscribe", "channel": channel}) == Subscribe(None, channel)


@pytest.mark.parametrize(
    "since",
    [
        "1732560000123-0",
        ["1732560000123-0", "k3v9"],
        1,
        {"epoch": "k3v9"},
        {"offset": "1732560000123-0"},
        {"offset": "1732560000123-0", "epoch": ""},
        {"offset": "1732560000123-0", "epoch": 7},
        {"offset": "1732560000123-0", "epoch": "e" * 65},
        {"offset": 1732560000123, "epoch": "k3v9"},
        {"offset": "1732560000123", "epoch": "k3v9"},
        {"offset": "abc-0", "epoch": "k3v9"},
        {"offset": "-1-0", "epoch": "k3v9"},
        {"offset": "1-0-0", "epoch": "k3v9"},
        {"offset": " 1-0", "epoch": "k3v9"},
        {"offset": "1-0\n", "epoch": "k3v9"},
        {"offset": "1" * 20 + "-0", "epoch": "k3v9"},
    ],
    ids=repr,
)
@pytest.mark.parametrize("kind", ["subscribe", "history"])
def test_a_malformed_since_is_a_400(kind: str, since: Any) -> None:
    """`since` must be an object with an offset `<ms>-<seq>` and a non-empty epoch."""
    _rejects({"type": kind, "channel": "room:1", "since": since})


@pytest.mark.parametrize("offset", ["\u0661\u0662-0", "\uff11-\uff10", "1-\u0663"], ids=repr)
def test_offsets_with_non_ascii_digits_are_rejected(offset: str) -> None:
    """Offsets are ASCII `<ms>-<seq>`: Unicode digits (Arabic-Indic, full-width) are not offsets."""
    with pytest.raises(ProtocolError):
        offset_key(offset)
    _rejects({"type": "subscribe", "channel": "room:1", "since": {"offset": offset, "epoch": "e"}})


@pytest.mark.parametrize("bad_id", [-1, 1.0, 1.5, True, False, "1", [1], {"n": 1}, 2**53, 2**64])
def test_an_id_that_is_not_a_non_negative_integer_is_a_400(bad_id: Any) -> None:
    """`id` must be a non-negative integer; bools, floats and strings are rejected."""
    _rejects({"type": "ping", "id": bad_id})


def test_a_null_id_means_no_id() -> None:
    """`"id": null` is the same as no id."""
    assert parse_command({"type": "ping", "id": None}) == Ping(None)


def test_publish_without_data_is_a_400() -> None:
    """`data` is required for publish (null is allowed, absence is not)."""
    _rejects({"type": "publish", "channel": "room:1"})


@pytest.mark.parametrize("event", ["", "x" * 65, "a\nb", "a\rb", 5, None, "tab\t"])
def test_publish_with_an_unprintable_or_oversized_event_is_a_400(event: Any) -> None:
    """`event` must be 1-64 printable characters (it becomes an SSE `event:` line)."""
    _rejects({"type": "publish", "channel": "room:1", "data": 1, "event": event})


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "chat", "text": "hi"},
        {"type": "chat", "recipientId": "", "text": "hi"},
        {"type": "chat", "recipientId": "bob smith", "text": "hi"},
        {"type": "chat", "recipientId": 5, "text": "hi"},
        {"type": "chat", "recipientId": "bob"},
        {"type": "chat", "recipientId": "bob", "text": 5},
        {"type": "presence"},
        {"type": "presence", "status": ""},
        {"type": "presence", "status": "s" * 65},
        {"type": "history", "channel": "room:1", "limit": -1},
        {"type": "history", "channel": "room:1", "limit": 1.5},
        {"type": "history", "channel": "room:1", "limit": True},
        {"type": "refresh"},
        {"type": "refresh", "token": ""},
        {"type": "refresh", "token": 1},
        {"type": "auth"},
        {"type": "auth", "token": "t" * 8193},
    ],
    ids=repr,
)
def test_other_malformed_fields_are_a_400(obj: dict[str, Any]) -> None:
    """Missing or mistyped fields of chat, presence, history, refresh and auth are rejected."""
    _rejects(obj)


def test_protocol_error_is_a_herald_error_with_code_400() -> None:
    """ProtocolError sits under the single HeraldError root and carries 400."""
    assert issubclass(ProtocolError, HeraldError)
    assert ProtocolError.code == 400


# --- offsets, namespaces -------------------------------------------------------------------


def test_offset_key_orders_numerically_not_lexically() -> None:
    """Offsets compare by (ms, seq) as integers."""
    offsets = ["10-0", "9-5", "9-10", "100-0", "9-9", "0-0"]
    assert sorted(offsets, key=offset_key) == ["0-0", "9-5", "9-9", "9-10", "10-0", "100-0"]
    assert offset_key("1732560000123-7") == (1732560000123, 7)


@pytest.mark.parametrize("offset", ["", "1", "1-", "-1", "a-b", "1.0-0", 1, None])
def test_offset_key_rejects_malformed_offsets(offset: Any) -> None:
    """Anything but `<digits>-<digits>` is a ProtocolError."""
    with pytest.raises(ProtocolError):
        offset_key(offset)


def test_namespace_is_the_part_before_the_first_colon() -> None:
    """`room:42:x` is in namespace `room`; a name without `:` is in the default namespace ''."""
    assert namespace_of("room:42:x") == "room"
    assert namespace_of("lobby") == ""
    assert namespace_of(":x") == ""
    assert personal_channel("alice") == "user:alice"


# --- envelope -----------------------------------------------------------------------------


def test_publication_envelope_has_exactly_the_contract_keys() -> None:
    """A message sent by a user carries type, channel, offset, epoch, event, from, data, ts."""
    p = Publication("room:42", "1732560000123-0", "k3v9", {"x": 1}, "chat", "alice", 1732560000123)
    assert p.envelope() == {
        "type": "message",
        "channel": "room:42",
        "offset": "1732560000123-0",
        "epoch": "k3v9",
        "event": "chat",
        "from": "alice",
        "data": {"x": 1},
        "ts": 1732560000123,
    }


def test_publication_envelope_omits_from_when_there_is_no_sender() -> None:
    """Server-published messages have no `from` key, and `event` defaults to `message`."""
    p = Publication("room:42", "1-0", "k3v9", None)
    env = p.envelope()
    assert set(env) == {"type", "channel", "offset", "epoch", "event", "data", "ts"}
    assert env["event"] == "message" and env["data"] is None


def test_publication_rejects_a_malformed_offset() -> None:
    """A Publication's offset is validated on construction."""
    with pytest.raises(ProtocolError):
        Publication("room:42", "nope", "e", None)
