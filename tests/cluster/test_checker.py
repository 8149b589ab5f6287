"""The no-loss checker itself, on synthetic histories (no processes): it must catch a lost, a
duplicated, a reordered or an altered message, and excuse exactly what a recovered:false covered."""

from __future__ import annotations

import pytest

from .checker import Pub, ResumingClient, check_no_loss

CH = "room:x"


def _client(channels: tuple[str, ...] = (CH,)) -> ResumingClient:
    return ResumingClient(["ws://127.0.0.1:1/ws"], "u", channels)


def _sub(
    c: ResumingClient, offset: str, epoch: str, *, since: bool = False, recovered: bool = False, session: int = 0
) -> None:
    c.logs[CH].on_subscribed(
        {"channel": CH, "offset": offset, "epoch": epoch, "recovered": recovered, "missed": 0}, since, session
    )


def _msg(c: ResumingClient, offset: str, epoch: str, data: object, session: int = 0) -> None:
    c.logs[CH].on_message({"type": "message", "channel": CH, "offset": offset, "epoch": epoch, "data": data}, session)


def _pubs(epoch: str, *items: tuple[str, object]) -> list[Pub]:
    return [Pub(o, epoch, d) for o, d in items]


def test_complete_history_passes_and_earlier_publishes_are_not_required() -> None:
    c = _client()
    published = {CH: _pubs("e", ("1-0", "old"), ("2-0", "a"), ("3-0", "b"))}
    _sub(c, "1-0", "e")
    _msg(c, "2-0", "e", "a")
    _msg(c, "3-0", "e", "b")
    report = check_no_loss(published, c)
    assert report["messages"] == 2 and report["duplicates"] == 0


@pytest.mark.parametrize("case", ["lost", "duplicate", "reordered", "altered", "unknown"])
def test_violations_are_caught(case: str) -> None:
    c = _client()
    published = {CH: _pubs("e", ("2-0", "a"), ("3-0", "b"), ("4-0", "c"))}
    _sub(c, "1-0", "e")
    frames = {
        "lost": [("2-0", "a"), ("4-0", "c")],
        "duplicate": [("2-0", "a"), ("3-0", "b"), ("3-0", "b"), ("4-0", "c")],
        "reordered": [("3-0", "b"), ("2-0", "a"), ("4-0", "c")],
        "altered": [("2-0", "a"), ("3-0", "B"), ("4-0", "c")],
        "unknown": [("2-0", "a"), ("3-0", "b"), ("3-5", "?"), ("4-0", "c")],
    }[case]
    for offset, data in frames:
        _msg(c, offset, "e", data)
    with pytest.raises(AssertionError):
        check_no_loss(published, c)


def test_duplicates_can_be_tolerated_and_are_counted() -> None:
    c = _client()
    _sub(c, "0-0", "e")
    for offset in ("1-0", "1-0", "2-0"):
        _msg(c, offset, "e", offset)
    report = check_no_loss({CH: _pubs("e", ("1-0", "1-0"), ("2-0", "2-0"))}, c, allow_duplicates=True)
    assert report["duplicates"] == 1


def test_recovered_false_excuses_the_gap_and_nothing_after_it() -> None:
    # the shard lost epoch "e": 3-0 and 4-0 are gone; the new epoch "f" starts again
    published = {CH: _pubs("e", ("2-0", "a"), ("3-0", "b"), ("4-0", "c")) + _pubs("f", ("6-0", "d"), ("7-0", "e"))}
    c = _client()
    _sub(c, "1-0", "e")
    _msg(c, "2-0", "e", "a")
    _sub(c, "0-0", "f", since=True, recovered=False, session=1)  # nothing yet in the new epoch
    _msg(c, "6-0", "f", "d", 1)
    _msg(c, "7-0", "f", "e", 1)
    assert check_no_loss(published, c)["recovered_false"] == {CH: 1}

    silent = _client()  # same history without the recovered:false: a silent gap
    _sub(silent, "1-0", "e")
    _msg(silent, "2-0", "e", "a")
    _msg(silent, "6-0", "f", "d")
    _msg(silent, "7-0", "f", "e")
    with pytest.raises(AssertionError, match="LOST 2"):
        check_no_loss(published, silent)

    late = _client()  # told, but then a message of the new epoch is missing
    _sub(late, "1-0", "e")
    _msg(late, "2-0", "e", "a")
    _sub(late, "0-0", "f", since=True, recovered=False, session=1)
    _msg(late, "7-0", "f", "e", 1)
    with pytest.raises(AssertionError, match="LOST 1"):
        check_no_loss(published, late)


def test_recovered_false_within_an_epoch_excuses_only_up_to_the_announced_offset() -> None:
    published = {CH: _pubs("e", ("2-0", "a"), ("3-0", "b"), ("4-0", "c"), ("5-0", "d"))}
    c = _client()
    _sub(c, "1-0", "e")
    _msg(c, "2-0", "e", "a")
    _sub(c, "3-0", "e", since=True, recovered=False, session=1)  # e.g. retention dropped 3-0
    _msg(c, "5-0", "e", "d", 1)
    with pytest.raises(AssertionError, match=r"LOST 1 .*4-0"):
        check_no_loss(published, c)


def test_messages_before_the_resubscribe_reply_are_set_aside() -> None:
    c = _client()
    _sub(c, "0-0", "e")
    _msg(c, "1-0", "e", "a")
    c.logs[CH].live = False  # a new connection: the personal channel may deliver before the reply
    _msg(c, "3-0", "e", "c", 1)
    _sub(c, "1-0", "e", since=True, recovered=True, session=1)
    _msg(c, "2-0", "e", "b", 1)
    _msg(c, "3-0", "e", "c", 1)
    report = check_no_loss({CH: _pubs("e", ("1-0", "a"), ("2-0", "b"), ("3-0", "c"))}, c)
    assert (report["early"], report["duplicates"]) == (1, 0)
