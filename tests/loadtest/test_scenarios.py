"""Smoke runs of every scenario over WebSocket and SSE against a real `herald dev`: everything
published is delivered once, in order, and the counts add up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.server import HeraldProcess
from tests.loadtest.conftest import run_loadtest

N = 8  # connections
RATE = 40  # messages per second
SMALL = ("--connections", str(N), "--rate", str(RATE), "--duration", "1")


def _assert_clean(report: dict, per_message: int) -> None:
    d, p = report["delivered"], report["published"]
    assert (d["lost"], d["duplicated"], d["out_of_order"], d["extra"]) == (0, 0, 0, 0), report
    assert p["confirmed"] == p["attempted"] == RATE, p
    assert d["expected"] == d["received"] == d["total"] == RATE * per_message
    assert report["connections"]["subscribed_at_start"] == N
    assert report["connections"]["connect_errors"] == {}
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"] < 5000
    assert report["latency_ms"]["count"] == d["total"]
    assert set(report["settled"]) == {"complete"}


@pytest.mark.parametrize("transport", ["ws", "sse"])
@pytest.mark.parametrize("scenario", ["fanout", "direct", "chat"])
def test_scenario_delivers_every_message_once(
    herald: HeraldProcess, capsys: pytest.CaptureFixture[str], scenario: str, transport: str
) -> None:
    """fanout: every message reaches all N clients; direct and chat: each reaches one client."""
    code, report = run_loadtest(capsys, scenario, "--transport", transport, "--url", herald.http, *SMALL)
    assert code == 0, report
    _assert_clean(report, N if scenario == "fanout" else 1)
    assert report["connections"]["reconnects"] == 0
    assert report["connections"]["close_codes"] == {}


@pytest.mark.parametrize("transport", ["ws", "sse"])
def test_reconnect_storm_resumes_without_loss(
    herald: HeraldProcess, capsys: pytest.CaptureFixture[str], transport: str
) -> None:
    """Every client drops at once mid-run, stays away 100 ms and resumes (since / Last-Event-ID):
    the server's history fills the gap."""
    code, report = run_loadtest(
        capsys, "reconnect-storm", "--transport", transport, "--url", herald.http, *SMALL, "--storm-downtime", "0.1"
    )
    assert code == 0, report
    _assert_clean(report, N)
    c = report["connections"]
    assert c["storm_drops"] == c["reconnects"] == c["resumed"] == N
    assert c["unrecovered"] == 0 and c["resumed_without_position"] == 0
    assert c["close_codes"] == {"dropped by loadtest": N}


def test_storm_through_the_api_closes_with_4008_and_clients_resume(
    herald: HeraldProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_loadtest(capsys, "reconnect-storm", "--storm-via", "api", "--url", herald.http, *SMALL)
    assert code == 0, report
    _assert_clean(report, N)
    assert report["connections"]["close_codes"] == {"4008": N}
    assert report["connections"]["reconnects"] == N


def test_direct_via_notify_and_batched_publishing(herald: HeraldProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_loadtest(
        capsys, "direct", "--direct-via", "notify", "--transport", "sse", "--url", herald.http, *SMALL
    )
    assert code == 0, report
    _assert_clean(report, 1)
    code, report = run_loadtest(capsys, "direct", "--batch", "4", "--url", herald.http, *SMALL)
    assert code == 0, report
    _assert_clean(report, 1)


def test_msgpack_websocket_clients(herald: HeraldProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_loadtest(capsys, "fanout", "--codec", "msgpack", "--url", herald.http, *SMALL)
    assert code == 0, report
    _assert_clean(report, N)


def test_two_worker_processes_merge_their_results_and_plot(
    herald: HeraldProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plot = tmp_path / "latency.png"
    code, report = run_loadtest(capsys, "fanout", "--workers", "2", "--url", herald.http, *SMALL, "--plot", str(plot))
    assert code == 0, report
    _assert_clean(report, N)
    assert report["settled"] == ["complete", "complete"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
