"""The final report: one JSON-able dict (`--json` prints it as is), its text rendering, and the exit code.

Exit codes:
  0  every expected message arrived once and in order
  1  messages were lost (expected by a subscribed client, never received)
  2  bad usage (options)
  3  nothing lost, but duplicates or out-of-order deliveries
  4  the run could not be measured: no client subscribed, no publication confirmed, or a worker failed
  130 interrupted
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table

from .runner import RunOutcome
from .stats import PERCENTILES

__all__ = [
    "build_report",
    "render_text",
    "EXIT_OK",
    "EXIT_LOSS",
    "EXIT_USAGE",
    "EXIT_DISORDER",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "REPORT_VERSION",
]

EXIT_OK, EXIT_LOSS, EXIT_USAGE, EXIT_DISORDER, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
REPORT_VERSION = 1

_SHOWN_METRICS = (
    "herald_connections{",
    "herald_connections_accepted_total",
    "herald_connections_closed_total",
    "herald_messages_in_total",
    "herald_messages_out_total",
    "herald_publications_total",
    "herald_api_publications_total",
    "herald_slow_consumers_total",
    "herald_limit_refusals_total",
    "herald_client_errors_total",
    "herald_drains_total",
    "herald_router_forwarded_total",
    "herald_router_errors_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
)


def _ms(us: float) -> float:
    return round(us / 1000, 3)


def _latency(hist: Any) -> dict[str, Any]:
    count = hist.get_total_count()
    if not count:
        return {"count": 0}
    out: dict[str, Any] = {"count": count, "min": _ms(hist.get_min_value()), "mean": _ms(hist.get_mean_value())}
    for name, p in PERCENTILES:
        out[name] = _ms(hist.get_value_at_percentile(p))
    out["max"] = _ms(hist.get_max_value())
    return out


def _timeline(merged: dict[str, Any]) -> list[dict[str, Any]]:
    seconds = sorted(set(merged["timeline"]) | set(merged["published_timeline"]))
    rows = []
    for sec in seconds:
        hist = merged["timeline"].get(sec)
        row: dict[str, Any] = {
            "t": sec,
            "published": merged["published_timeline"].get(sec, 0),
            "delivered": merged["delivered_timeline"].get(sec, 0),
        }
        if hist is not None and hist.get_total_count():
            row.update(
                p50_ms=_ms(hist.get_value_at_percentile(50)),
                p99_ms=_ms(hist.get_value_at_percentile(99)),
                max_ms=_ms(hist.get_max_value()),
            )
        rows.append(row)
    return rows


def exit_code(report: dict[str, Any]) -> int:
    d, c, p = report["delivered"], report["connections"], report["published"]
    if c["subscribed_at_start"] == 0 or p["confirmed"] == 0:
        return EXIT_FAILED
    if d["lost"] > 0:
        return EXIT_LOSS
    if d["duplicated"] > 0 or d["out_of_order"] > 0:
        return EXIT_DISORDER
    return EXIT_OK


def build_report(out: RunOutcome) -> dict[str, Any]:
    cfg, merged, tally = out.cfg, out.merged, out.tally
    c, kinds = merged["counts"], merged["kinds"]
    publish_s = max(1e-9, (out.publish_end_ns - out.t0_ns) / 1e9)
    last = merged["last_delivery_ns"]
    window = max(publish_s, (last - out.t0_ns) / 1e9) if last else publish_s
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "scenario": cfg.scenario,
        "transport": cfg.transport,
        "targets": list(cfg.targets),
        "api_url": cfg.api_url,
        "run_id": cfg.run_id,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "duration_s": round(publish_s, 3),
        "total_s": round((out.end_ns - out.t0_ns) / 1e9, 3),
        "connections": {
            "requested": cfg.connections,
            "subscribed_at_start": c["ready_at_start"],
            "never_connected": c["never_connected"],
            "reconnects": c["reconnects"],
            "reconnect_attempts": c["reconnect_attempts"],
            "gave_up": c["gave_up"],
            "resumed": c["resumed"],
            "unrecovered": c["unrecovered"],
            "resumed_without_position": c["resumed_without_position"],
            "storm_drops": c["storm_drops"],
            "connect_errors": dict(kinds["connect_errors"]),
            "close_codes": dict(kinds["close_codes"]),
        },
        "published": {
            "target_rate": cfg.rate,
            "attempted": c["published"],
            "confirmed": c["confirmed"],
            "unconfirmed": c["unconfirmed"],
            "per_s": round(c["confirmed"] / publish_s, 1),
            "skipped_offline": c["chat_skipped"],
            "errors": dict(kinds["publish_errors"]),
        },
        "delivered": {
            "expected": tally.expected,
            "received": tally.received,
            "total": c["delivered"],
            "per_s": round(c["delivered"] / window, 1),
            "lost": tally.lost,
            "duplicated": c["duplicated"],
            "out_of_order": c["out_of_order"],
            "extra": tally.extra,
            "foreign": c["foreign"],
        },
        "error_replies": dict(kinds["error_replies"]),
        "latency_ms": _latency(merged["latency"]),
        "timeline": _timeline(merged),
        "settled": out.settled,
        "drains": out.drains,
        "server_metrics": out.server_metrics,
    }
    code = exit_code(report)
    report["exit_code"] = code
    report["ok"] = code == EXIT_OK
    return report


def _kinds(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"


def _server_lines(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for url, snap in metrics.items():
        if "error" in snap:
            rows.append((url, snap["error"]))
            continue
        parts = []
        for key, entry in snap["metrics"].items():
            if not key.startswith(_SHOWN_METRICS):
                continue
            if "delta" in entry:
                if entry["delta"]:
                    parts.append(f"{key.removeprefix('herald_')} +{entry['delta']:g}")
            elif entry["value"]:
                parts.append(f"{key.removeprefix('herald_')} {entry['value']:g}")
        lat = snap.get("fanout_latency")
        if lat:
            parts.append(f"fan-out latency mean {lat['mean_ms']} ms, p99 <= {lat['p99_le_ms']} ms")
        rows.append((url, "\n".join(parts) or "no change"))
    return rows


def render_text(report: dict[str, Any], console: Console) -> None:
    c, p, d, lat = report["connections"], report["published"], report["delivered"], report["latency_ms"]
    cfg = report["config"]
    console.print(
        f"[bold]Herald loadtest[/bold] — {report['scenario']} over {report['transport']}, "
        f"{c['requested']} connections on {len(report['targets'])} target(s), "
        f"{report['duration_s']} s at {p['target_rate']:g} msg/s, {cfg['payload_size']} B payload, "
        f"{cfg['workers']} worker(s)"
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row(
        "connections",
        f"{c['subscribed_at_start']} subscribed at start, {c['never_connected']} never "
        f"connected, {c['reconnects']} reconnects ({c['resumed']} resumed, {c['unrecovered']} not "
        f"recovered), {c['gave_up']} gave up",
    )
    grid.add_row("connect errors", _kinds(c["connect_errors"]))
    grid.add_row("closes", _kinds(c["close_codes"]))
    grid.add_row(
        "published", f"{p['confirmed']} confirmed of {p['attempted']} ({p['per_s']:g}/s), errors: {_kinds(p['errors'])}"
    )
    grid.add_row("delivered", f"{d['received']} of {d['expected']} expected, {d['total']} in all ({d['per_s']:g}/s)")
    style = "red" if d["lost"] else "green"
    grid.add_row(
        "integrity",
        f"[{style}]lost {d['lost']}[/{style}], duplicated {d['duplicated']}, "
        f"out of order {d['out_of_order']}, extra {d['extra']}",
    )
    if lat.get("count"):
        grid.add_row(
            "latency ms",
            "  ".join(f"{k} {lat[k]:g}" for k in ("p50", "p90", "p99", "p99.9", "max"))
            + f"  (mean {lat['mean']:g}, n={lat['count']})",
        )
    if report["error_replies"]:
        grid.add_row("error replies", _kinds(report["error_replies"]))
    for ev in report["drains"]:
        grid.add_row("drain", f"{ev['target']} at {ev['at_s']} s via {ev['via']}: {ev['result']}")
    for url, text in _server_lines(report["server_metrics"]):
        grid.add_row("server", f"[dim]{url}[/dim]\n{text}")
    verdict = {
        0: "[green]OK[/green]",
        1: "[red]LOSS[/red]",
        3: "[yellow]DUPLICATES / OUT OF ORDER[/yellow]",
        4: "[red]NOTHING MEASURED[/red]",
    }.get(report["exit_code"], "?")
    grid.add_row("verdict", f"{verdict} (exit {report['exit_code']})")
    console.print(grid)
