"""The report: the `--json` schema that scripts rely on, and the text rendering."""

from __future__ import annotations

import pytest

from herald.loadtest.cli import main
from herald.loadtest.report import REPORT_VERSION
from tests.e2e.server import HeraldProcess
from tests.loadtest.conftest import run_loadtest

_SCHEMA = {
    "version": int,
    "scenario": str,
    "transport": str,
    "targets": list,
    "api_url": str,
    "run_id": str,
    "finished_at": str,
    "config": dict,
    "duration_s": float,
    "total_s": float,
    "connections": dict,
    "published": dict,
    "delivered": dict,
    "error_replies": dict,
    "latency_ms": dict,
    "timeline": list,
    "settled": list,
    "drains": list,
    "server_metrics": dict,
    "exit_code": int,
    "ok": bool,
}
_CONNECTIONS = (
    "requested",
    "subscribed_at_start",
    "never_connected",
    "reconnects",
    "reconnect_attempts",
    "gave_up",
    "resumed",
    "unrecovered",
    "resumed_without_position",
    "storm_drops",
)
_PUBLISHED = ("target_rate", "attempted", "confirmed", "unconfirmed", "per_s", "skipped_offline")
_DELIVERED = ("expected", "received", "total", "per_s", "lost", "duplicated", "out_of_order", "extra", "foreign")
_LATENCY = ("count", "min", "mean", "p50", "p90", "p99", "p99.9", "max")


def test_json_report_schema(herald: HeraldProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_loadtest(
        capsys,
        "fanout",
        "--url",
        herald.http,
        "--connections",
        "5",
        "--rate",
        "20",
        "--duration",
        "1",
        "--run-id",
        "schema1",
    )
    assert code == 0
    for key, typ in _SCHEMA.items():
        assert isinstance(report[key], typ), (key, report[key])
    assert report["version"] == REPORT_VERSION and report["run_id"] == "schema1"
    assert report["config"]["channel"] == "loadtest:schema1"
    assert "api_key" not in report["config"] and "jwt_secret" not in report["config"]
    c, p, d, lat = report["connections"], report["published"], report["delivered"], report["latency_ms"]
    for key in _CONNECTIONS:
        assert isinstance(c[key], int), key
    assert isinstance(c["connect_errors"], dict) and isinstance(c["close_codes"], dict)
    for key in _PUBLISHED:
        assert isinstance(p[key], (int, float)), key
    assert isinstance(p["errors"], dict)
    for key in _DELIVERED:
        assert isinstance(d[key], (int, float)), key
    for key in _LATENCY:
        assert isinstance(lat[key], (int, float)), key
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert report["timeline"] and {"t", "published", "delivered"} <= set(report["timeline"][0])
    assert sum(row["delivered"] for row in report["timeline"]) == d["total"] == 100
    assert sum(row["published"] for row in report["timeline"]) == p["attempted"] == 20
    # the servers' metrics: what changed during the run
    snap = report["server_metrics"][herald.http + "/metrics"]
    assert snap["metrics"]["herald_api_publications_total"]["delta"] == 20
    assert snap["metrics"]["herald_messages_out_total"]["delta"] >= 100
    assert snap["fanout_latency"]["count"] >= 20


def test_text_report(herald: HeraldProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["direct", "--url", herald.http, "--connections", "3", "--rate", "10", "--duration", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Herald loadtest" in out and "direct over ws" in out
    assert "lost 0, duplicated 0, out of order 0" in out
    assert "latency ms" in out and "p99.9" in out
    assert "verdict" in out and "OK (exit 0)" in out
