"""Unit tests of the loss / duplicate / order accounting and the message marker (no sockets)."""

from __future__ import annotations

import time

import orjson

from herald.loadtest.accounting import Expectation, PublishLog, ReceiverLog, StreamLog, Tally, Verdict, offset_key
from herald.loadtest.marker import make_data, make_text, padding, read_marker


def _receive(log: ReceiverLog, channel: str, pub: str, seqs: list[int], epoch: str = "e1") -> list[Verdict]:
    """Deliver `seqs` with offsets that follow the delivery order (as a correct server does)."""
    return [log.record(channel, pub, seq, f"1000-{k}", epoch) for k, seq in enumerate(seqs)]


def test_stream_log_counts_each_sequence_once() -> None:
    stream = StreamLog()
    assert [stream.add(s) for s in (0, 5, 5, 17, 0)] == [True, True, False, True, False]
    assert stream.seen == 3
    assert 17 in stream and 4 not in stream and 10_000 not in stream
    assert stream.count_below(5) == 1
    assert stream.count_below(6) == 2
    assert stream.count_below(18) == 3
    assert stream.count_below(1000) == 3


def test_a_message_seen_twice_is_a_duplicate_not_a_second_delivery() -> None:
    log = ReceiverLog(["room:a"])
    assert log.record("room:a", "w0", 0, "1000-0", "e1") is Verdict.NEW
    assert log.record("room:a", "w0", 0, "1000-0", "e1") is Verdict.DUPLICATE
    assert (log.new, log.duplicated, log.out_of_order) == (1, 1, 0)


def test_an_offset_behind_the_highest_seen_is_out_of_order() -> None:
    log = ReceiverLog(["room:a"])
    verdicts = [
        log.record("room:a", "w0", seq, off, "e1") for seq, off in ((0, "1000-0"), (2, "1000-2"), (1, "1000-1"))
    ]
    assert verdicts == [Verdict.NEW, Verdict.NEW, Verdict.OUT_OF_ORDER]
    # the highest offset stays the high mark: the next one in order is fine
    assert log.record("room:a", "w0", 3, "1000-3", "e1") is Verdict.NEW
    assert log.out_of_order == 1


def test_publishers_interleaving_on_one_channel_is_not_disorder() -> None:
    """Two publishers' sequences interleave in any way; only the server's offsets must increase."""
    log = ReceiverLog(["room:a"])
    order = [("w1", 0), ("w0", 0), ("w0", 1), ("w1", 1), ("w1", 2), ("w0", 2)]
    assert all(log.record("room:a", pub, seq, f"5-{k}", "e") is Verdict.NEW for k, (pub, seq) in enumerate(order))


def test_a_new_epoch_restarts_the_order_check() -> None:
    log = ReceiverLog(["room:a"])
    assert log.record("room:a", "w0", 0, "9000-5", "e1") is Verdict.NEW
    assert log.record("room:a", "w0", 1, "1-0", "e2") is Verdict.NEW


def test_offsets_that_are_not_herald_offsets_are_not_compared() -> None:
    assert offset_key("1732560000123-7") == (1732560000123, 7)
    assert offset_key("abc") is None and offset_key(None) is None and offset_key("1-x") is None
    log = ReceiverLog(["c"])
    assert log.record("c", "p", 0, "zz", "e") is Verdict.NEW
    assert log.record("c", "p", 1, "aa", "e") is Verdict.NEW


def test_settle_counts_lost_and_ignores_unconfirmed_publications() -> None:
    pub = PublishLog()
    for _ in range(10):
        pub.next_seq("room:a", "w0")
    pub.unconfirmed("room:a", "w0", 3)  # maybe published, maybe not: never expected
    pub.unconfirmed("room:a", "w0", 7)
    expect = Expectation([pub.table()])
    assert expect.expects("room:a", "w0", 2) and not expect.expects("room:a", "w0", 3)
    assert not expect.expects("room:a", "w0", 10) and not expect.expects("room:b", "w0", 0)

    log = ReceiverLog(["room:a"])
    _receive(log, "room:a", "w0", [0, 1, 2, 3, 5, 6, 9])  # 4 and 8 missing; 3 got through although unconfirmed
    assert expect.settle(log) == Tally(expected=8, received=6, lost=2, extra=1)


def test_a_subscriber_that_received_nothing_lost_everything() -> None:
    pub = PublishLog()
    for _ in range(5):
        pub.next_seq("room:a", "w0")
    expect = Expectation([pub.table()])
    assert expect.settle(ReceiverLog(["room:a"])) == Tally(expected=5, received=0, lost=5, extra=0)
    # and a receiver of another channel expects none of them
    assert expect.settle(ReceiverLog(["room:b"])) == Tally()


def test_messages_of_channels_a_receiver_is_not_accounted_on_are_extra() -> None:
    pub = PublishLog()
    pub.next_seq("room:a", "w0")
    log = ReceiverLog(["room:b"])
    log.record("room:a", "w0", 0, "1-0", "e")
    assert Expectation([pub.table()]).settle(log) == Tally(extra=1)


def test_tables_from_several_workers_merge_per_stream() -> None:
    w0, w1 = PublishLog(), PublishLog()
    for _ in range(4):
        w0.next_seq("room:a", "w0")
    for _ in range(6):
        w1.next_seq("room:a", "w1")
    w1.unconfirmed("room:a", "w1", 5)
    expect = Expectation([w0.table(), w1.table()])
    assert expect.table() == {"room:a": {"w0": (4, []), "w1": (6, [5])}}
    log = ReceiverLog(["room:a"])
    _receive(log, "room:a", "w0", [0, 1, 2, 3])
    _receive(log, "room:a", "w1", [0, 1, 2, 4])
    assert expect.settle(log) == Tally(expected=9, received=8, lost=1, extra=0)
    # the same table sent over a pipe as JSON-ish lists merges the same way
    again = Expectation([orjson.loads(orjson.dumps(expect.table()))])
    assert again.settle(log) == expect.settle(log)


def test_tallies_add_up() -> None:
    assert Tally(1, 2, 3, 4) + Tally(10, 20, 30, 40) == Tally(11, 22, 33, 44)


def test_markers_round_trip_in_data_and_in_chat_text() -> None:
    ts = time.monotonic_ns()
    data = make_data("w3", 42, ts, padding(100, "w3"))
    assert read_marker(data) == ("w3", 42, ts)
    assert 85 <= len(orjson.dumps(data)) <= 110
    text = make_text("lt1-7", 9, 55, "xx|yy")
    assert read_marker({"text": text}) == ("lt1-7", 9, 55)


def test_data_without_a_marker_is_not_ours() -> None:
    cases: tuple[object, ...] = (
        None,
        "text",
        5,
        [],
        {},
        {"text": "hello"},
        {"p": 1, "s": 0, "t": 0},
        {"p": "w", "s": -1, "t": 0},
        {"p": "w", "s": "1", "t": 0},
        {"text": "lt|a|b|c|d"},
        {"text": "lt|a|1"},
    )
    for data in cases:
        assert read_marker(data) is None, data
