"""Prometheus metrics of an edge node, in a registry owned by the app (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from herald.core.metrics import LoopMetrics

__all__ = ["NodeMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NodeMetrics:
    def __init__(self, node_id: str) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.connections = Gauge("herald_connections", "Open client connections", ["transport"], registry=r)
        self.accepted = Counter("herald_connections_accepted", "Connections accepted", ["transport"], registry=r)
        self.closed = Counter(
            "herald_connections_closed", "Connections closed, by close code", ["transport", "code"], registry=r
        )
        self.refused = Counter("herald_limit_refusals", "Requests refused by a limit", ["reason"], registry=r)
        self.messages_in = Counter("herald_messages_in", "Client messages received", ["transport"], registry=r)
        loop = LoopMetrics(r)
        self.messages_out = loop.counter("herald_messages_out", "Messages written to client connections")
        self.published = Counter("herald_publications", "Publications accepted", ["source"], registry=r)
        self.errors = Counter("herald_client_errors", "Error replies sent to clients, by code", ["code"], registry=r)
        self.slow = Counter("herald_slow_consumers", "Connections closed as slow consumers (4008)", registry=r)
        self.latency = loop.histogram(
            "herald_delivery_latency_seconds", "Publish to local fan-out latency", _LATENCY_BUCKETS
        )
        self.api_published = loop.counter("herald_api_publications", "Publications accepted through the server API")
        self.draining = Gauge("herald_draining", "1 while the node drains", registry=r)
        self.drains = Counter("herald_drains", "Drains started", registry=r)
        self.shed = Counter("herald_shed_connections", "Connections closed to rebalance the cluster", registry=r)
        self.inbox = Gauge("herald_inbox_length", "Deliveries waiting in this node's inbox", registry=r)
        self.channels = Gauge("herald_channels", "Channels with local subscribers", registry=r)
        Gauge("herald_node_info", "Node identity", ["node"], registry=r).labels(node_id).set(1)

    def delivered(self, count: int, latency: float) -> None:
        """One publication fanned out to `count` local connections (called once per publication)."""
        self.messages_out.value += count
        self.latency.observe(latency if latency > 0.0 else 0.0)
