"""Unit tests of the loadtest's pure parts: SSE parsing, the reconnect policy, histogram merging
across workers, the metrics snapshot and option validation."""

from __future__ import annotations

import random

import pytest

from herald.loadtest.client import after_close, backoff
from herald.loadtest.config import ConfigError, LoadConfig, normalize_target
from herald.loadtest.metrics import parse_prometheus, summarize
from herald.loadtest.sse import SseParser
from herald.loadtest.stats import WorkerStats, merge_results


def test_sse_events_split_across_chunks_are_reassembled() -> None:
    parser = SseParser()
    stream = b'retry: 2000\n: herald abc\n\nid: c1\nevent: message\ndata: {"a":1}\n\nid: c2\ndata: {"b"'
    events = parser.feed(stream)
    assert [(e.id, e.event, e.data) for e in events] == [("c1", "message", '{"a":1}')]
    assert parser.retry_ms == 2000 and parser.comments == 1
    events = parser.feed(b":2}\n\n")
    assert [(e.id, e.event, e.data) for e in events] == [("c2", "message", '{"b":2}')]


def test_sse_id_without_data_moves_the_cursor_like_eventsource() -> None:
    parser = SseParser()
    assert parser.feed(b"id: cursor-0\n\n") == []
    assert parser.last_id == "cursor-0"
    (event,) = parser.feed(b"event: recovery\ndata: {}\n\n")
    assert event.id == "cursor-0" and event.event == "recovery"


def test_sse_crlf_and_multiline_data() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    (event,) = parser.feed(b"\ndata: b\r\n\r\n")
    assert event.data == "a\nb"


@pytest.mark.parametrize(
    ("code", "reconnect", "switch"),
    [
        (1000, False, False),
        (4003, False, False),
        (1009, False, False),
        (1012, True, True),
        (4008, True, False),
        (4001, True, False),
        (1013, True, True),
        (1011, True, False),
        (None, True, False),
    ],
)
def test_reconnect_policy_follows_the_close_code_table(code: int | None, reconnect: bool, switch: bool) -> None:
    again, delay, other = after_close(code, 300, 0, random.Random(1))
    assert (again, other) == (reconnect, switch)
    if code == 1012:
        assert 0.3 <= delay <= 0.55  # after_ms plus up to 250 ms of jitter
    if code == 4008:
        assert delay <= 0.05


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(3)
    delays = [backoff(n, rng) for n in range(12)]
    assert delays[0] <= 0.05 and max(delays) <= 2.0 and delays[-1] >= 1.0


def test_worker_results_merge_counts_and_histograms() -> None:
    a, b = WorkerStats(0), WorkerStats(1)
    for stats, lat_ms in ((a, 1), (b, 100)):
        stats.t0_ns = 0
        for k in range(100):
            sent = 1_000_000_000 * (k % 3)  # over 3 seconds, with a fixed latency
            stats.delivered(sent + lat_ms * 1_000_000, sent)
        stats.counts["duplicated"] += 2
        stats.kinds["close_codes"]["1012"] += 1
    merged = merge_results([a.result(), b.result()])
    assert merged["counts"]["delivered"] == 200 and merged["counts"]["duplicated"] == 4
    assert merged["kinds"]["close_codes"]["1012"] == 2
    hist = merged["latency"]
    assert hist.get_total_count() == 200
    assert 900 <= hist.get_value_at_percentile(25) <= 1100  # µs
    assert 99_000 <= hist.get_value_at_percentile(75) <= 101_000
    assert sorted(merged["timeline"]) == [0, 1, 2]
    assert sum(merged["delivered_timeline"].values()) == 200


_BEFORE = """# HELP herald_messages_out_total x
herald_messages_out_total 10.0
herald_messages_out_created 1.7e9
herald_connections{transport="ws"} 0.0
herald_delivery_latency_seconds_bucket{le="0.001"} 0.0
herald_delivery_latency_seconds_bucket{le="0.01"} 0.0
herald_delivery_latency_seconds_bucket{le="+Inf"} 0.0
herald_delivery_latency_seconds_count 0.0
herald_delivery_latency_seconds_sum 0.0
other_metric 5
"""
_AFTER = (
    _BEFORE.replace("herald_messages_out_total 10.0", "herald_messages_out_total 110.0")
    .replace('herald_connections{transport="ws"} 0.0', 'herald_connections{transport="ws"} 7.0')
    .replace('le="0.001"} 0.0', 'le="0.001"} 90.0')
    .replace('le="0.01"} 0.0', 'le="0.01"} 100.0')
    .replace('le="+Inf"} 0.0', 'le="+Inf"} 100.0')
    .replace("seconds_count 0.0", "seconds_count 100.0")
    .replace("seconds_sum 0.0", "seconds_sum 0.2")
)


def test_metrics_snapshot_reports_values_deltas_and_server_fanout_latency() -> None:
    assert "other_metric" not in parse_prometheus(_AFTER)
    assert "herald_messages_out_created" not in parse_prometheus(_AFTER)
    out = summarize(
        {"u": parse_prometheus(_BEFORE), "down": "unreachable"},
        {"u": parse_prometheus(_AFTER), "down": "unreachable (ClientConnectorError)"},
    )
    metrics = out["u"]["metrics"]
    assert metrics["herald_messages_out_total"] == {"value": 110.0, "delta": 100.0}
    assert metrics['herald_connections{transport="ws"}'] == {"value": 7.0}
    assert out["u"]["fanout_latency"] == {"count": 100, "mean_ms": 2.0, "p50_le_ms": 1.0, "p99_le_ms": 10.0}
    assert out["down"] == {"error": "unreachable (ClientConnectorError)"}


def test_target_urls_are_normalized_to_base_urls() -> None:
    assert normalize_target("127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert normalize_target("ws://h:1/ws") == "http://h:1"
    assert normalize_target("wss://h/prefix/ws") == "https://h/prefix"
    assert normalize_target("http://h:2/") == "http://h:2"
    with pytest.raises(ConfigError):
        normalize_target("ftp://h")


def test_config_defaults_follow_the_targets() -> None:
    cfg = LoadConfig(targets=("h:1", "ws://h:2/ws"), run_id="abc")
    assert cfg.api_url == "http://h:1"
    assert cfg.metrics_urls == ("http://h:1/metrics", "http://h:2/metrics")
    assert cfg.channel == "loadtest:abc"
    assert "api_key" not in cfg.to_dict() and "jwt_secret" not in cfg.to_dict()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"scenario": "drain"}, "at least two"),
        ({"connections": 0}, "--connections"),
        ({"workers": 5, "connections": 4}, "--workers"),
        ({"settle": 5, "grace": 1}, "--settle"),
        ({"scenario": "direct", "direct_via": "notify", "batch": 10}, "--batch"),
    ],
)
def test_unusable_options_are_refused(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadConfig(**kw)


def test_drain_targets_default_to_all_but_the_last() -> None:
    targets = ("a:1", "b:1", "c:1")
    assert LoadConfig(scenario="drain", targets=targets).drain_targets == ("http://a:1", "http://b:1")
    assert LoadConfig(scenario="drain", targets=targets, drain_pids=(7,)).drain_targets == ("http://a:1",)
    assert LoadConfig(scenario="drain", targets=targets, drain_count=3).drain_targets == tuple(
        normalize_target(t) for t in targets
    )
    assert LoadConfig(scenario="fanout", targets=targets).drain_targets == ()


def test_drain_publishes_through_a_node_that_is_not_drained() -> None:
    assert LoadConfig(scenario="drain", targets=("a:1", "b:1", "c:1")).api_url == "http://c:1"
    assert LoadConfig(scenario="drain", targets=("a:1", "b:1"), drain_pids=(5,)).api_url == "http://b:1"
    assert LoadConfig(scenario="drain", targets=("a:1", "b:1"), api_url="r:9").api_url == "http://r:9"
