"""The WebSocket session state machine, driven through its public methods with `now` passed in."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from herald.core.protocol.closecodes import CloseCode
from herald.core.protocol.codec import MSGPACK
from herald.core.protocol.envelope import Auth, Chat, History, Presence, Publish, Subscribe, Unsubscribe, Who
from herald.core.protocol.errors import EngineUnavailable
from herald.core.protocol.session import HOLD_PERSONAL, Session, SessionLimits, State, Tick
from tests.unit._support import (
    NOW,
    OPEN_ERROR_CODES,
    drain,
    history,
    make_principal,
    make_session,
    make_token,
    pub,
    send,
)

MS = 1_700_000_000_000
ROOM = "room:1"


def off(seq: int) -> str:
    return f"{MS}-{seq}"


def since(seq: int, epoch: str = "e1") -> dict[str, str]:
    return {"offset": off(seq), "epoch": epoch}


def open_session(limits: SessionLimits | None = None, **kw: Any) -> Session:
    """An OPEN session for alice with the `connected` frame already drained."""
    s = make_session(limits, **kw)
    drain(s)
    return s


def subscribe(s: Session, channel: str = ROOM, now: float = NOW, **fields: Any) -> Subscribe:
    cmd = send(s, {"type": "subscribe", "channel": channel, **fields}, now)
    assert isinstance(cmd, Subscribe), drain(s)
    return cmd


def subscribed(s: Session, channel: str = ROOM, *, offset: int = 0, epoch: str = "e1") -> None:
    """Complete a fresh subscription of `channel` whose latest offset is `offset`."""
    cmd = subscribe(s, channel)
    s.begin_subscribe(cmd)
    s.complete_subscribe(cmd, history(channel, epoch=epoch, offset=off(offset)))
    drain(s)


def offsets(frames: list[dict[str, Any]]) -> list[str]:
    return [f["offset"] for f in frames if f["type"] == "message"]


# --- opening ------------------------------------------------------------------------------


def test_an_authenticated_session_opens_with_the_contract_connected_frame() -> None:
    """A session with a principal is OPEN and queues exactly the `connected` frame of CONTRACT §5."""
    s = make_session(SessionLimits(ping_interval=25.0))
    assert s.state is State.OPEN
    assert drain(s) == [
        {
            "type": "connected",
            "client": "c1",
            "user": "alice",
            "node": "n1",
            "ping_interval": 25,
            "channels": ["user:alice"],
        }
    ]
    assert list(s.subs) == ["user:alice"]


# --- subscribe permissions and limits -------------------------------------------------------


def test_subscribing_to_a_permitted_channel_hands_the_command_to_the_adapter() -> None:
    """`room:1` matches the token's `room:*` pattern: receive returns the Subscribe, no reply yet."""
    s = open_session()
    cmd = send(s, {"type": "subscribe", "channel": ROOM, "id": 1})
    assert cmd == Subscribe(1, ROOM)
    assert drain(s) == []


def test_subscribing_to_a_forbidden_channel_replies_403_and_keeps_the_session_open() -> None:
    """A channel outside the token's patterns gets error 403 with the id echoed; the session stays open."""
    s = open_session()
    assert send(s, {"type": "subscribe", "channel": "secret:1", "id": 5}) is None
    [err] = drain(s)
    assert err["type"] == "error" and err["code"] == 403 and err["id"] == 5 and err["message"]
    assert s.state is State.OPEN and s.close_code is None
    assert isinstance(send(s, {"type": "subscribe", "channel": ROOM}), Subscribe)


def test_subscribing_to_another_users_personal_channel_is_forbidden_even_with_a_star_pattern() -> None:
    """`user:bob` is bob's alone: alice gets 403 although her token grants `*`."""
    s = open_session(principal=make_principal("alice", channels=["*"]))
    send(s, {"type": "subscribe", "channel": "user:bob"})
    [err] = drain(s)
    assert err["type"] == "error" and err["code"] == 403


def test_an_invalid_channel_name_replies_400_with_the_id_echoed() -> None:
    """A malformed channel name is an error 400 carrying the id; the session stays open."""
    s = open_session()
    assert send(s, {"type": "subscribe", "channel": "room 1", "id": 9}) is None
    [err] = drain(s)
    assert err["type"] == "error" and err["code"] == 400 and err["id"] == 9 and err["message"]
    assert s.state is State.OPEN


def test_malformed_json_replies_400_and_keeps_the_session_open() -> None:
    """Bytes that are not JSON give error 400 without an id; the session stays open."""
    s = open_session()
    assert s.receive("{not json", NOW) is None
    [err] = drain(s)
    assert err["type"] == "error" and err["code"] == 400 and "id" not in err
    assert s.state is State.OPEN


def test_the_subscription_limit_replies_403_once_reached() -> None:
    """With max_subscriptions=3 (the personal channel included) a third extra channel is refused."""
    s = open_session(SessionLimits(max_subscriptions=3))
    subscribed(s, "room:a")
    subscribed(s, "room:b")
    assert send(s, {"type": "subscribe", "channel": "room:c", "id": 1}) is None
    [err] = drain(s)
    assert err["code"] == 403 and err["id"] == 1
    assert len(s.subs) == 3


def test_resubscribing_a_channel_already_held_is_allowed_at_the_limit() -> None:
    """The limit counts distinct channels: subscribing again to a held one is not refused."""
    s = open_session(SessionLimits(max_subscriptions=2))
    subscribed(s, "room:a")
    assert isinstance(send(s, {"type": "subscribe", "channel": "room:a"}), Subscribe)


# --- subscribe / resume -------------------------------------------------------------------


def test_fresh_subscribe_replies_subscribed_not_recovered_with_zero_missed() -> None:
    """Without `since`: one `subscribed` frame, recovered false, missed 0, offset = latest; no history sent."""
    s = open_session()
    cmd = subscribe(s, id=3)
    assert s.begin_subscribe(cmd) is True
    s.complete_subscribe(cmd, history(ROOM, offset=off(7), messages=[pub(ROOM, 6), pub(ROOM, 7)]))
    assert drain(s) == [
        {
            "type": "subscribed",
            "channel": ROOM,
            "epoch": "e1",
            "offset": off(7),
            "recovered": False,
            "missed": 0,
            "id": 3,
        }
    ]
    assert s.deliver(pub(ROOM, 7)) is False
    assert s.deliver(pub(ROOM, 8)) is True


def test_resume_sends_subscribed_with_missed_then_exactly_the_missed_messages_in_order() -> None:
    """With `since` and a recovered history: `subscribed` (missed=n) then the n messages, oldest first."""
    s = open_session()
    cmd = subscribe(s, since=since(2), id=4)
    s.begin_subscribe(cmd)
    missed = [pub(ROOM, 3), pub(ROOM, 4), pub(ROOM, 5)]
    s.complete_subscribe(cmd, history(ROOM, offset=off(5), recovered=True, messages=missed))
    frames = drain(s)
    assert frames[0] == {
        "type": "subscribed",
        "channel": ROOM,
        "epoch": "e1",
        "offset": off(5),
        "recovered": True,
        "missed": 3,
        "id": 4,
    }
    assert frames[1:] == [p.envelope() for p in missed]


def test_resume_ignores_history_messages_at_or_before_since() -> None:
    """History entries the client already saw (offset <= since) are neither counted nor sent."""
    s = open_session()
    cmd = subscribe(s, since=since(3))
    s.begin_subscribe(cmd)
    msgs = [pub(ROOM, 2), pub(ROOM, 3), pub(ROOM, 4)]
    s.complete_subscribe(cmd, history(ROOM, offset=off(4), recovered=True, messages=msgs))
    frames = drain(s)
    assert frames[0]["missed"] == 1 and offsets(frames) == [off(4)]


def test_live_messages_during_recovery_are_buffered_then_flushed_after_history_without_gaps() -> None:
    """deliver() returns False while recovering; the buffer follows the history, each offset once."""
    s = open_session()
    cmd = subscribe(s, since=since(2))
    s.begin_subscribe(cmd)
    assert [s.deliver(pub(ROOM, n)) for n in (6, 7)] == [False, False]
    s.complete_subscribe(
        cmd, history(ROOM, offset=off(5), recovered=True, messages=[pub(ROOM, 3), pub(ROOM, 4), pub(ROOM, 5)])
    )
    frames = drain(s)
    assert frames[0]["type"] == "subscribed" and frames[0]["missed"] == 3
    assert offsets(frames) == [off(n) for n in (3, 4, 5, 6, 7)]
    assert s.deliver(pub(ROOM, 7)) is False
    assert s.deliver(pub(ROOM, 8)) is True


def test_a_live_message_also_in_history_is_sent_once() -> None:
    """Publications delivered live while history is read and also returned by it are not duplicated."""
    s = open_session()
    cmd = subscribe(s, since=since(2))
    s.begin_subscribe(cmd)
    for n in (4, 5, 6):
        assert s.deliver(pub(ROOM, n)) is False
    s.complete_subscribe(
        cmd, history(ROOM, offset=off(5), recovered=True, messages=[pub(ROOM, 3), pub(ROOM, 4), pub(ROOM, 5)])
    )
    assert offsets(drain(s)) == [off(n) for n in (3, 4, 5, 6)]


def test_live_messages_during_a_fresh_subscribe_are_flushed_after_subscribed_once() -> None:
    """Without `since`, buffered messages newer than the reported offset follow `subscribed`; older ones do not."""
    s = open_session()
    cmd = subscribe(s)
    s.begin_subscribe(cmd)
    for n in (5, 6):
        s.deliver(pub(ROOM, n))
    s.complete_subscribe(cmd, history(ROOM, offset=off(5)))
    frames = drain(s)
    assert frames[0]["type"] == "subscribed"
    assert offsets(frames) == [off(6)]


def test_msgs_out_counts_only_the_messages_actually_sent_after_recovery() -> None:
    """Buffered duplicates dropped by complete_subscribe are not counted as sent."""
    s = open_session()
    cmd = subscribe(s, since=since(2))
    s.begin_subscribe(cmd)
    for n in (4, 5, 6):
        s.deliver(pub(ROOM, n))
    before = s.msgs_out
    s.complete_subscribe(
        cmd, history(ROOM, offset=off(5), recovered=True, messages=[pub(ROOM, 3), pub(ROOM, 4), pub(ROOM, 5)])
    )
    sent = len(offsets(drain(s)))
    assert sent == 4
    assert s.msgs_out - before == sent


def test_deliver_dedupes_offsets_at_or_below_the_last_delivered() -> None:
    """deliver() is True once per new offset, in order, and False for repeats and older offsets."""
    s = open_session()
    subscribed(s, offset=2)
    assert s.deliver(pub(ROOM, 3)) is True
    assert s.deliver(pub(ROOM, 3)) is False
    assert s.deliver(pub(ROOM, 2)) is False
    assert s.deliver(pub(ROOM, 1)) is False
    assert s.deliver(pub(ROOM, 4)) is True
    assert s.deliver(pub(ROOM, 9, ms=MS - 1)) is False  # older millisecond, larger seq


def test_resume_after_epoch_change_reports_not_recovered() -> None:
    """The channel's history was lost (new epoch, engine says not recovered): recovered false, missed 0."""
    s = open_session()
    cmd = subscribe(s, since=since(9, "e1"))
    s.begin_subscribe(cmd)
    s.complete_subscribe(
        cmd,
        history(
            ROOM,
            epoch="e2",
            offset=off(2),
            recovered=False,
            messages=[pub(ROOM, 1, epoch="e2"), pub(ROOM, 2, epoch="e2")],
        ),
    )
    frames = drain(s)
    assert frames == [
        {"type": "subscribed", "channel": ROOM, "epoch": "e2", "offset": off(2), "recovered": False, "missed": 0}
    ]
    assert s.deliver(pub(ROOM, 3, epoch="e2")) is True


def test_resume_reports_not_recovered_when_the_history_epoch_differs_from_since() -> None:
    """A history of another epoch cannot fill the gap: the session says recovered false even if the result claims it."""
    s = open_session()
    cmd = subscribe(s, since=since(9, "e1"))
    s.begin_subscribe(cmd)
    s.complete_subscribe(
        cmd,
        history(
            ROOM,
            epoch="e2",
            offset=off(2),
            recovered=True,
            messages=[pub(ROOM, 1, epoch="e2"), pub(ROOM, 2, epoch="e2")],
        ),
    )
    [frame] = drain(s)
    assert frame["recovered"] is False and frame["missed"] == 0 and frame["epoch"] == "e2"


def test_resume_with_incomplete_history_reports_not_recovered() -> None:
    """Same epoch but retention dropped messages (recovered false): missed 0, nothing replayed."""
    s = open_session()
    cmd = subscribe(s, since=since(1))
    s.begin_subscribe(cmd)
    s.complete_subscribe(cmd, history(ROOM, offset=off(9), recovered=False, messages=[pub(ROOM, 8), pub(ROOM, 9)]))
    frames = drain(s)
    assert [f["type"] for f in frames] == ["subscribed"]
    assert frames[0]["recovered"] is False and frames[0]["missed"] == 0
    assert s.deliver(pub(ROOM, 9)) is False and s.deliver(pub(ROOM, 10)) is True


def test_buffered_messages_of_an_older_epoch_are_dropped_on_completion() -> None:
    """Live messages buffered from an epoch other than the history's are not flushed."""
    s = open_session()
    cmd = subscribe(s)
    s.begin_subscribe(cmd)
    s.deliver(pub(ROOM, 5, epoch="old"))
    s.complete_subscribe(cmd, history(ROOM, epoch="new", offset=off(1)))
    assert offsets(drain(s)) == []


def test_too_many_buffered_messages_while_recovering_close_with_4008() -> None:
    """Over max_pending live messages during recovery marks the session a slow consumer (4008)."""
    s = open_session(SessionLimits(max_pending=2))
    cmd = subscribe(s)
    s.begin_subscribe(cmd)
    for n in range(1, 5):
        s.deliver(pub(ROOM, n))
    assert s.state is State.CLOSED and s.close_code == CloseCode.SLOW_CONSUMER


def test_complete_subscribe_after_unsubscribe_sends_nothing() -> None:
    """A subscription dropped while its history was read completes silently."""
    s = open_session()
    cmd = subscribe(s)
    s.begin_subscribe(cmd)
    s.unsubscribe(Unsubscribe(None, ROOM))
    drain(s)
    s.complete_subscribe(cmd, history(ROOM, offset=off(1)))
    assert drain(s) == []


def test_cancel_subscribe_forgets_a_new_channel_and_replies_the_error() -> None:
    """An engine failure during subscribe removes the new subscription and replies with the error."""
    s = open_session()
    cmd = subscribe(s, id=2)
    was_new = s.begin_subscribe(cmd)
    s.cancel_subscribe(cmd, EngineUnavailable("down"), was_new)
    assert ROOM not in s.subs
    [err] = drain(s)
    assert err["type"] == "error" and err["id"] == 2


# --- unsubscribe ----------------------------------------------------------------------------


def test_unsubscribe_replies_unsubscribed_and_stops_delivery() -> None:
    """After unsubscribe the reply is `unsubscribed` and deliver() returns False."""
    s = open_session()
    subscribed(s, offset=1)
    cmd = send(s, {"type": "unsubscribe", "channel": ROOM, "id": 6})
    assert cmd == Unsubscribe(6, ROOM)
    assert s.unsubscribe(cmd) is True
    assert drain(s) == [{"type": "unsubscribed", "channel": ROOM, "id": 6}]
    assert s.deliver(pub(ROOM, 2)) is False


def test_unsubscribing_the_personal_channel_is_forbidden() -> None:
    """The personal channel is permanent for the connection: 403."""
    s = open_session()
    send(s, {"type": "unsubscribe", "channel": "user:alice"})
    [err] = drain(s)
    assert err["code"] == 403
    assert "user:alice" in s.subs


def test_the_personal_channel_delivers_from_the_start() -> None:
    """Messages on `user:<sub>` are delivered without any subscribe, once the client has said
    anything (or after HOLD_PERSONAL seconds); what arrived before goes out first, in order."""
    s = open_session()
    assert s.deliver(pub("user:alice", 1)) is False  # held: the client may want to resume first
    assert s.deliver(pub("user:bob", 1)) is False
    send(s, {"type": "ping", "id": 1})
    assert offsets(drain(s)) == [off(1)]
    assert s.deliver(pub("user:alice", 2)) is True


def test_the_personal_channel_is_released_by_the_clock_for_silent_clients() -> None:
    s = open_session()
    assert s.deliver(pub("user:alice", 1)) is False
    assert s.tick(NOW + HOLD_PERSONAL / 2) is Tick.NOTHING and drain(s) == []
    s.tick(NOW + HOLD_PERSONAL)
    assert offsets(drain(s)) == [off(1)]
    assert s.deliver(pub("user:alice", 2)) is True


def test_resuming_the_personal_channel_sends_the_gap_then_the_held_messages_once_in_order() -> None:
    """A client resuming user:<id> from offset 2 while 4 and 5 arrived live before its subscribe:
    it gets 3 (history), 4, 5 — each once, in order — and nothing older."""
    s = open_session()
    assert s.deliver(pub("user:alice", 4)) is False
    cmd = subscribe(s, "user:alice", since=since(2))
    assert s.begin_subscribe(cmd) is False
    assert s.deliver(pub("user:alice", 5)) is False
    s.complete_subscribe(
        cmd, history("user:alice", offset=off(4), recovered=True, messages=[pub("user:alice", 3), pub("user:alice", 4)])
    )
    frames = drain(s)
    assert frames[0]["type"] == "subscribed" and frames[0]["recovered"] is True
    assert offsets(frames[1:]) == [off(3), off(4), off(5)]
    assert s.deliver(pub("user:alice", 5)) is False and s.deliver(pub("user:alice", 6)) is True


def test_a_failed_resume_of_the_personal_channel_still_releases_what_was_held() -> None:
    s = open_session()
    assert s.deliver(pub("user:alice", 4)) is False
    cmd = subscribe(s, "user:alice", since=since(2))
    s.begin_subscribe(cmd)
    s.cancel_subscribe(cmd, EngineUnavailable("down"), False)
    frames = drain(s)
    assert offsets([f for f in frames if f.get("type") != "error"]) == [off(4)]
    assert [f["code"] for f in frames if f.get("type") == "error"] == [503]


# --- other commands -----------------------------------------------------------------------


def test_publish_is_handed_over_when_the_token_permits_it() -> None:
    """A permitted publish returns the Publish command; a forbidden one replies 403."""
    s = open_session()
    assert send(s, {"type": "publish", "channel": ROOM, "data": 1}) == Publish(None, ROOM, 1)
    assert send(s, {"type": "publish", "channel": "news:1", "data": 1, "id": 2}) is None
    [err] = drain(s)
    assert err["code"] == 403 and err["id"] == 2


def test_publish_is_forbidden_in_a_namespace_that_disallows_client_publishing() -> None:
    """allow_publish(namespace) False gives 403 even with a matching `publish` claim."""
    s = open_session(SessionLimits(allow_publish=lambda ns: ns != "room"))
    assert send(s, {"type": "publish", "channel": ROOM, "data": 1}) is None
    assert drain(s)[0]["code"] == 403


def test_who_and_history_need_a_subscription_or_permission() -> None:
    """who/history on a permitted channel are handed over; on a forbidden one they reply 403."""
    s = open_session()
    assert isinstance(send(s, {"type": "who", "channel": ROOM}), Who)
    assert isinstance(send(s, {"type": "history", "channel": ROOM, "limit": 5}), History)
    assert send(s, {"type": "who", "channel": "secret:1"}) is None
    assert send(s, {"type": "history", "channel": "secret:1"}) is None
    assert [e["code"] for e in drain(s)] == [403, 403]


def test_presence_sets_the_status_and_chat_is_handed_over() -> None:
    """presence updates Session.status; chat returns the Chat command."""
    s = open_session()
    assert send(s, {"type": "presence", "status": "away"}) == Presence(None, "away")
    assert s.status == "away"
    assert send(s, {"type": "chat", "recipientId": "bob", "text": "hi"}) == Chat(None, "bob", "hi")


def test_auth_on_an_open_session_replies_400() -> None:
    """A second authentication is a protocol error."""
    s = open_session()
    assert send(s, {"type": "auth", "token": make_token("alice"), "id": 1}) is None
    assert drain(s)[0]["code"] == 400


def test_ping_is_answered_with_pong_echoing_the_id() -> None:
    """{"type":"ping","id":7} → {"type":"pong","id":7}; without id, no id."""
    s = open_session()
    assert send(s, {"type": "ping", "id": 7}) is None
    assert send(s, {"type": "ping"}) is None
    assert drain(s) == [{"type": "pong", "id": 7}, {"type": "pong"}]


def test_a_msgpack_session_answers_ping_with_a_msgpack_pong() -> None:
    """With herald.msgpack, a binary ping gets a binary pong."""
    s = make_session(codec=MSGPACK)
    s.frames_to_send()
    assert s.receive(msgpack.packb({"type": "ping", "id": 1}), NOW) is None
    assert [msgpack.unpackb(f) for f in s.frames_to_send()] == [{"type": "pong", "id": 1}]


# --- rate limit ---------------------------------------------------------------------------


def test_the_message_after_the_burst_is_rate_limited_until_a_token_refills() -> None:
    """client_burst=3: the 4th message at the same instant gets 429; 1/rate later one is accepted."""
    s = open_session(SessionLimits(client_burst=3, client_rate=4.0))
    for i in range(3):
        send(s, {"type": "ping", "id": i})
    send(s, {"type": "ping", "id": 3})
    frames = drain(s)
    assert [f["type"] for f in frames] == ["pong", "pong", "pong", "error"]
    assert frames[3]["code"] == 429 and frames[3]["id"] == 3
    assert s.state is State.OPEN
    send(s, {"type": "ping", "id": 4}, NOW + 0.25)
    assert drain(s) == [{"type": "pong", "id": 4}]
    send(s, {"type": "ping", "id": 5}, NOW + 0.25)
    assert drain(s)[0]["code"] == 429


# --- refresh ------------------------------------------------------------------------------


def test_refresh_with_a_token_of_the_same_user_replies_refreshed_with_exp() -> None:
    """A fresh token for the same user replaces the principal; the reply carries its exp."""
    s = open_session()
    exp = int(NOW) + 7200
    assert send(s, {"type": "refresh", "token": make_token("alice", exp=exp), "id": 8}) is None
    assert drain(s) == [{"type": "refreshed", "exp": exp, "id": 8}]
    assert s.principal.exp == exp


def test_refresh_with_a_token_of_another_user_replies_403() -> None:
    """A token for a different user is refused with 403 and the principal is kept."""
    s = open_session()
    old = s.principal
    send(s, {"type": "refresh", "token": make_token("bob"), "id": 1})
    [err] = drain(s)
    assert err["code"] == 403 and err["id"] == 1
    assert s.principal is old and s.state is State.OPEN


@pytest.mark.parametrize(
    "token",
    [make_token("alice", exp=int(NOW) - 10), make_token("alice", secret="z" * 32), "x.y.z"],
    ids=["expired", "wrong-key", "garbage"],
)
def test_refresh_with_an_invalid_token_replies_a_contract_error_and_keeps_the_session(token: str) -> None:
    """An expired or forged refresh token gets an error with a code of CONTRACT §5 (not 401); the old token still holds."""
    s = open_session()
    old = s.principal
    send(s, {"type": "refresh", "token": token, "id": 1})
    [err] = drain(s)
    assert err["type"] == "error" and err["id"] == 1
    assert err["code"] in OPEN_ERROR_CODES
    assert s.principal is old and s.state is State.OPEN


# --- first-message auth -------------------------------------------------------------------


def test_a_session_without_credentials_waits_for_auth_silently() -> None:
    """Created without a principal, the session is AUTHENTICATING and has sent nothing."""
    s = make_session(principal=None)
    assert s.state is State.AUTHENTICATING
    assert s.frames_to_send() == []


@pytest.mark.parametrize("first", ['{"type":"ping"}', '{"type":"subscribe","channel":"room:1"}', "{junk", "[]"])
def test_a_first_message_other_than_auth_closes_with_4001(first: str) -> None:
    """Anything but a valid auth message first closes with 4001 and sends no error frame."""
    s = make_session(principal=None)
    assert s.receive(first, NOW) is None
    assert s.state is State.CLOSED and s.close_code == CloseCode.UNAUTHORIZED
    assert s.frames_to_send() == []


def test_auth_with_an_invalid_token_closes_with_4001() -> None:
    """A first auth message with a bad token closes with 4001."""
    s = make_session(principal=None)
    assert send(s, {"type": "auth", "token": make_token("alice", secret="z" * 32)}) is None
    assert s.close_code == CloseCode.UNAUTHORIZED


def test_auth_with_a_valid_token_returns_the_command_and_authenticated_sends_connected() -> None:
    """A valid auth message yields the Auth command; authenticated() opens and queues `connected`."""
    s = make_session(principal=None)
    cmd = send(s, {"type": "auth", "token": make_token("carol")})
    assert isinstance(cmd, Auth)
    assert s.principal is not None and s.principal.user == "carol"
    assert s.frames_to_send() == []
    s.authenticated()
    assert s.state is State.OPEN
    [connected] = drain(s)
    assert connected["type"] == "connected" and connected["user"] == "carol"
    assert connected["channels"] == ["user:carol"]


def test_a_closed_session_ignores_further_messages() -> None:
    """After a close, receive() returns None and queues nothing."""
    s = make_session(principal=None)
    s.receive("{junk", NOW)
    assert send(s, {"type": "auth", "token": make_token("alice")}) is None
    assert s.frames_to_send() == [] and s.state is State.CLOSED


# --- tick ---------------------------------------------------------------------------------


def test_no_auth_message_within_auth_timeout_closes_with_4001() -> None:
    """An AUTHENTICATING session closes with 4001 once auth_timeout has passed."""
    s = make_session(SessionLimits(auth_timeout=5.0), principal=None)
    assert s.tick(NOW + 4.9) is Tick.NOTHING
    assert s.tick(NOW + 5.0) is Tick.CLOSE
    assert s.close_code == CloseCode.UNAUTHORIZED
    assert s.tick(NOW + 6.0) is Tick.CLOSE


def test_token_expiry_closes_with_4001() -> None:
    """tick() closes with 4001 once the principal's exp is reached without a refresh."""
    s = open_session(principal=make_principal("alice", exp=int(NOW) + 30))
    s.pong(NOW + 29)
    assert s.tick(NOW + 29) is not Tick.CLOSE
    assert s.tick(NOW + 30) is Tick.CLOSE
    assert s.close_code == CloseCode.UNAUTHORIZED


def test_a_refresh_postpones_token_expiry() -> None:
    """After a refresh the new exp governs the session."""
    s = open_session(principal=make_principal("alice", exp=int(NOW) + 30))
    send(s, {"type": "refresh", "token": make_token("alice", exp=int(NOW) + 120)}, NOW + 20)
    s.pong(NOW + 31)
    assert s.tick(NOW + 31) is not Tick.CLOSE


def test_a_ping_is_due_every_ping_interval() -> None:
    """tick() returns PING at each ping_interval and NOTHING in between."""
    s = open_session(SessionLimits(ping_interval=25.0))
    assert s.tick(NOW + 24) is Tick.NOTHING
    s.pong(NOW + 25)
    assert s.tick(NOW + 25) is Tick.PING
    assert s.tick(NOW + 26) is Tick.NOTHING
    s.pong(NOW + 50)
    assert s.tick(NOW + 50) is Tick.PING


def test_no_pong_for_more_than_two_intervals_closes() -> None:
    """Without pongs the session survives two intervals and is closed soon after."""
    s = open_session(SessionLimits(ping_interval=10.0))
    assert s.tick(NOW + 10) is Tick.PING
    assert s.tick(NOW + 20) is Tick.PING
    assert s.state is State.OPEN
    assert s.tick(NOW + 22.5) is Tick.CLOSE
    assert s.state is State.CLOSED


def test_answered_pings_keep_the_session_alive() -> None:
    """Pongs within each interval keep the session open indefinitely."""
    s = open_session(SessionLimits(ping_interval=10.0, idle_timeout=0))
    for t in range(1, 200):
        if s.tick(NOW + t) is Tick.PING:
            s.pong(NOW + t + 0.5)
    assert s.state is State.OPEN


def _idle_run(
    s: Session, until: float, *, deliver_at: float | None = None, ping_at: float | None = None
) -> float | None:
    """Tick once a second (answering pings) until `until`; the time of a CLOSE, if any."""
    t = NOW
    while t < NOW + until:
        t += 1
        if deliver_at is not None and t == NOW + deliver_at:
            assert s.deliver(pub("user:alice", int(t)))
        if ping_at is not None and t == NOW + ping_at:
            send(s, {"type": "ping"}, t)
        s.pong(t)
        if s.tick(t) is Tick.CLOSE:
            return t - NOW
    return None


def test_idle_timeout_closes_with_4000() -> None:
    """No message either way for idle_timeout seconds closes with 4000."""
    s = open_session(SessionLimits(ping_interval=10.0, idle_timeout=100.0))
    assert _idle_run(s, 150) == 100
    assert s.close_code == CloseCode.IDLE_TIMEOUT


def test_deliveries_count_as_activity_for_the_idle_timeout() -> None:
    """A message delivered to the client resets the idle clock."""
    s = open_session(SessionLimits(ping_interval=10.0, idle_timeout=100.0))
    assert _idle_run(s, 300, deliver_at=60) == 160
    assert s.close_code == CloseCode.IDLE_TIMEOUT


def test_client_messages_count_as_activity_for_the_idle_timeout() -> None:
    """A message from the client resets the idle clock."""
    s = open_session(SessionLimits(ping_interval=10.0, idle_timeout=100.0))
    assert _idle_run(s, 300, ping_at=70) == 170


def test_idle_timeout_zero_never_closes() -> None:
    """idle_timeout=0 disables the idle check."""
    s = open_session(SessionLimits(ping_interval=10.0, idle_timeout=0))
    assert _idle_run(s, 500) is None


# --- replies ------------------------------------------------------------------------------


def test_a_reply_over_max_reply_size_becomes_error_413() -> None:
    """reply() replaces a reply larger than max_reply_size with error 413 carrying the id."""
    s = open_session(SessionLimits(max_reply_size=200))
    cmd = send(s, {"type": "who", "channel": ROOM, "id": 11})
    s.reply(cmd, {"type": "who", "channel": ROOM, "clients": [{"client": "x" * 300}]})
    [err] = drain(s)
    assert err["type"] == "error" and err["code"] == 413 and err["id"] == 11


def test_a_reply_within_max_reply_size_is_sent_with_the_id() -> None:
    """reply() sends a small reply unchanged except for the echoed id."""
    s = open_session(SessionLimits(max_reply_size=200))
    cmd = send(s, {"type": "who", "channel": ROOM, "id": 12})
    s.reply(cmd, {"type": "who", "channel": ROOM, "clients": []})
    assert drain(s) == [{"type": "who", "channel": ROOM, "clients": [], "id": 12}]


def test_a_failed_resume_of_a_live_subscription_keeps_its_position_and_live_messages() -> None:
    """A resume (subscribe with since) of a channel that is already live fails to read history: the
    subscription goes back to its live position and sends what arrived meanwhile; nothing is lost
    or sent twice, and the client may retry the resume."""
    s = open_session()
    subscribed(s, ROOM, offset=5)
    assert s.deliver(pub(ROOM, 6)) is True
    cmd = subscribe(s, ROOM, since=since(3))
    assert s.begin_subscribe(cmd) is False
    assert s.deliver(pub(ROOM, 7)) is False  # buffered while history is read
    s.cancel_subscribe(cmd, EngineUnavailable("down"), False)
    frames = drain(s)
    assert offsets(frames) == [off(7)]
    assert [f["code"] for f in frames if f["type"] == "error"] == [503]
    assert s.deliver(pub(ROOM, 6)) is False and s.deliver(pub(ROOM, 8)) is True


# --- client pings (issue 16) --------------------------------------------------------------


def test_websocket_pings_spend_the_message_rate_so_a_flood_gets_only_the_burst_answered() -> None:
    s = open_session(SessionLimits(client_rate=10.0, client_burst=5))
    answered = sum(s.allow_ping(NOW) for _ in range(5000))
    assert answered == 5
    assert not s.allow_ping(NOW + 0.05)
    assert s.allow_ping(NOW + 0.1)  # the bucket refills at the message rate


def test_pings_and_messages_share_one_budget() -> None:
    s = open_session(SessionLimits(client_rate=10.0, client_burst=3))
    assert all(s.allow_ping(NOW) for _ in range(3))
    send(s, {"type": "ping", "id": 1}, NOW)
    assert drain(s)[0]["code"] == 429


def test_a_closed_session_answers_no_ping() -> None:
    s = open_session()
    s.close(CloseCode.NORMAL)
    assert not s.allow_ping(NOW)
