"""The Grafana dashboard shipped by the chart (helm/herald/dashboards/herald.json): every metric it
queries is defined by a component's metrics class, with the labels it groups by, and it covers
what operators need to watch."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import CollectorRegistry

from .chart import CHART

DASHBOARD = json.loads((CHART / "dashboards" / "herald.json").read_text())
#: Labels Prometheus attaches to every scraped series (target labels of a ServiceMonitor).
TARGET_LABELS = {"pod", "namespace", "instance", "job", "service", "container", "endpoint"}
#: What the dashboard must show (the Helm chart's brief).
REQUIRED = {
    "herald_connections",
    "herald_connections_accepted_total",
    "herald_connections_closed_total",
    "herald_messages_in_total",
    "herald_messages_out_total",
    "herald_publications_total",
    "herald_api_publications_total",
    "herald_delivery_latency_seconds_bucket",
    "herald_slow_consumers_total",
    "herald_limit_refusals_total",
    "herald_client_errors_total",
    "herald_drains_total",
    "herald_draining",
    "herald_channels",
    "herald_inbox_length",
    "herald_router_partitions",
    "herald_router_lag_entries",
    "herald_router_forwarded_total",
    "herald_router_errors_total",
    "herald_control_leader",
    "herald_control_members",
    "herald_control_rebalance_requests_total",
    "herald_control_cleanups_total",
    "herald_control_drain_requests_total",
}


def _registries() -> dict[str, CollectorRegistry]:
    """One registry per component, from the metrics classes the processes use."""
    from herald.control.metrics import ControlMetrics
    from herald.node.metrics import NodeMetrics
    from herald.router.service import RouterMetrics

    return {
        "node": NodeMetrics("n").registry,
        "router": RouterMetrics().registry,
        "control": ControlMetrics("c").registry,
    }


def exported_series() -> dict[str, set[str]]:
    """Every series name the components can export -> the label names it carries."""
    out: dict[str, set[str]] = {}
    for registry in _registries().values():
        collectors = set(registry._collector_to_names)
        for collector in collectors:
            labels = set(getattr(collector, "_labelnames", ()))
            for family in collector.collect() if not hasattr(collector, "_labelnames") else [None]:
                name, kind = (family.name, family.type) if family is not None else (collector._name, collector._type)
                suffixes = {
                    "counter": ["_total"],
                    "histogram": ["_bucket", "_sum", "_count"],
                    "gauge": [""],
                    "summary": ["_sum", "_count", ""],
                    "info": ["_info"],
                }[kind]
                for suffix in suffixes:
                    out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def _targets() -> list[tuple[str, dict[str, Any]]]:
    return [(t["expr"], p) for p in DASHBOARD["panels"] for t in p.get("targets", [])]


def _metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bherald_[a-z0-9_]+\b", expr))


def test_every_queried_metric_is_defined_by_a_component() -> None:
    exported = exported_series()
    queried = {m for expr, _ in _targets() for m in _metrics(expr)}
    queried |= _metrics(json.dumps(DASHBOARD["templating"]))
    unknown = sorted(queried - exported.keys())
    assert not unknown, f"the dashboard queries metrics no component exports: {unknown}"


def test_grouping_labels_exist_on_the_queried_metrics() -> None:
    """`by (...)` labels and legend `{{label}}`s are labels of the metrics in the query (or target
    labels such as pod), so no panel silently collapses into one series."""
    exported = exported_series()
    problems = []
    for expr, panel in _targets():
        available = TARGET_LABELS | set().union(*(exported.get(m, set()) for m in _metrics(expr)))
        grouped = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")}
        legends = {t["legendFormat"] for t in panel["targets"] if t["expr"] == expr}
        used = grouped | {m for legend in legends for m in re.findall(r"\{\{(\w+)\}\}", legend)}
        if used - available:
            problems.append(f"{panel['title']!r}: {sorted(used - available)} not labels of {sorted(_metrics(expr))}")
    assert not problems, problems


def test_dashboard_covers_the_required_metrics() -> None:
    queried = {m for expr, _ in _targets() for m in _metrics(expr)}
    assert queried >= REQUIRED, sorted(REQUIRED - queried)


def test_dashboard_is_well_formed_for_the_grafana_sidecar() -> None:
    assert DASHBOARD["uid"] == "herald-overview" and DASHBOARD["title"] == "Herald"
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'namespace=~"$namespace"' in t["expr"], f"{p['title']!r}: not filtered by $namespace"
    assert len((CHART / "dashboards" / "herald.json").read_bytes()) < 900_000, "ConfigMaps are limited to 1 MiB"
