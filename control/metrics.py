"""Prometheus metrics of a control-plane replica, in a registry owned by its app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .view import STATES

__all__ = ["ControlMetrics"]


class ControlMetrics:
    def __init__(self, control_id: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.leader = Gauge("herald_control_leader", "1 while this replica is the leader", registry=r)
        self.members = Gauge(
            "herald_control_members", "Cluster members by role and state", ["role", "state"], registry=r
        )
        self.connections = Gauge("herald_control_cluster_connections", "Client connections on live nodes", registry=r)
        self.spread = Gauge(
            "herald_control_connection_spread", "Busiest ready node's connections over the mean, minus 1", registry=r
        )
        self.rebalance_rounds = Counter(
            "herald_control_rebalance_rounds", "Rebalancing rounds that moved connections", registry=r
        )
        self.rebalance_requests = Counter(
            "herald_control_rebalance_requests", "Connections nodes were asked to shed", registry=r
        )
        self.drain_requests = Counter("herald_control_drain_requests", "Drain orders sent to nodes", registry=r)
        self.cleanups = Counter("herald_control_cleanups", "Dead nodes cleaned up", registry=r)
        self.cleaned = Counter(
            "herald_control_cleaned_entries", "Registrations removed from dead nodes", ["kind"], registry=r
        )
        self.cleanup_seconds = Histogram(
            "herald_control_cleanup_seconds",
            "Time to clean up one dead node",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        self.errors = Counter("herald_control_errors", "Control rounds that failed (engine unreachable)", registry=r)
        Gauge("herald_control_info", "Control replica identity", ["control"], registry=r).labels(control_id).set(1)
        for role in ("node", "router", "control"):
            for state in STATES:
                self.members.labels(role, state).set(0)
