"""The control plane's work: leader election, the cluster view, crash cleanup, drain orders and
connection rebalancing (DESIGN "Control plane behaviours").

Every replica heartbeats, reads the members once a tick, keeps the view the admin API and the
dashboard serve, and accepts drain and rebalance requests. Only the leader (a lease in the engine;
a standby takes over when it lapses) cleans up dead members, runs automatic rebalancing and
publishes the view to the cluster channel the dashboards subscribe to (dashboard.py).
Rebalancing rounds take a short lease of their own, so two replicas never shed at the same time.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from herald import __version__
from herald.core.engine.base import Broker, Coordination
from herald.core.protocol.envelope import Order
from herald.core.protocol.errors import Conflict, EngineUnavailable, NotFound
from herald.core.tasks import TaskSet

from .dashboard import CLUSTER_CHANNEL, DashboardFeed, bounded_view
from .metrics import ControlMetrics
from .rebalance import plan, spread
from .view import STATES, ClusterView

__all__ = ["Control", "ControlSettings"]

log = structlog.get_logger("herald.control")

LEADER_LEASE = "control-leader"
ROUND_LEASE = "control-rebalance"
_CAMPAIGN_LIMIT = 600.0  # seconds a requested rebalance keeps going at most
_RECONNECT_SLACK = 1.0  # a shed client reconnects within the advisory's after_ms (< 1 s) and its jitter


@dataclass(frozen=True, slots=True)
class ControlSettings:
    member_timeout: float = 6.0  # seconds without a heartbeat before a member is dead
    dead_retention: float = 60.0  # seconds a dead member stays listed after its cleanup
    lease_seconds: float = 5.0  # leader lease; a standby takes over within it
    rebalance_ratio: float = 0.2  # spread bound: busiest ready node at most 20 % above the mean
    rebalance_interval: float = 5.0  # seconds between rounds
    rebalance_max: int = 250  # connections one node sheds per round at most
    rebalance_min_mean: float = 10.0  # below this many connections per node, nothing moves
    auto_rebalance: bool = True
    tick: float = 1.0
    max_message_size: int = 65_536  # a published view over this many bytes goes out without its members
    # How the dashboard page reaches the cluster channel; served by app.py, carried here so that
    # `herald dev`, which mounts control's routes on its node, gets it with the Control.
    dashboard: DashboardFeed = field(default_factory=DashboardFeed)


class ControlEngine(Coordination, Broker, Protocol):
    """The roles the control plane uses: coordination, and a broker to publish the cluster view."""


class Control:
    def __init__(
        self,
        engine: ControlEngine,
        settings: ControlSettings | None = None,
        control_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = s = settings or ControlSettings()
        self.id = control_id or f"control-{secrets.token_hex(4)}"
        self.metrics = ControlMetrics(self.id)
        self.view = ClusterView(s.member_timeout)
        self._clock = clock
        self._tasks = TaskSet()
        self.leader: str | None = None
        self.latest: dict[str, Any] = self.view.render(clock())
        self.updated = asyncio.Event()
        self._members: dict[str, tuple[float, dict[str, Any]]] = {}
        self._healthy_since: float | None = None
        self._next_round = 0.0
        self._fresh_after = 0.0  # node reports older than this predate the last round's moves
        self._campaign: asyncio.Task[None] | None = None
        self._trimmed = False  # the last published view went out without its members
        self.started = clock()

    @property
    def member(self) -> str:
        return f"control:{self.id}"

    @property
    def is_leader(self) -> bool:
        return self.leader == self.id

    async def start(self) -> None:
        self._tasks.spawn(self._loop(), name="control.loop")
        log.info("control.loop.started", control=self.id)

    async def stop(self) -> None:
        await self._tasks.cancel_all()
        if self._campaign is not None:
            self._campaign.cancel()
        try:
            if self.is_leader:
                await self.engine.release_lease(LEADER_LEASE, self.id)
            await self.engine.forget_member(self.member)
        except EngineUnavailable:
            pass
        log.info("control.stopped", control=self.id)

    # --- the loop -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except EngineUnavailable as exc:
                self.metrics.errors.inc()
                self._healthy_since = None
                log.warning("control.engine.unreachable", error=str(exc))
            await asyncio.sleep(self.settings.tick)

    async def tick(self) -> None:
        """One round: elect, heartbeat, read members, (leader) clean up and rebalance, publish."""
        s, now = self.settings, self._clock()
        was_leader = self.is_leader
        if await self.engine.hold_lease(LEADER_LEASE, self.id, s.lease_seconds):
            self.leader = self.id
            if not was_leader:
                log.info("control.leader.acquired", control=self.id)
        elif was_leader:
            log.warning("control.leader.lost", control=self.id)
            self.leader = None
        self.metrics.leader.set(1 if self.is_leader else 0)
        await self.engine.heartbeat(self.member, self._status())
        self._members = await self.engine.members()
        if self._healthy_since is None:
            self._healthy_since = now
        self.view.update(self._members)
        if not self.is_leader:
            self.leader = next(
                (
                    m[8:]
                    for m, (_, st) in self._members.items()
                    if m.startswith("control:") and st.get("leader") and self.view.state(m, now) != "dead"
                ),
                None,
            )
        else:
            await self._reap(now)
            if s.auto_rebalance and now >= self._next_round:
                self._next_round = now + s.rebalance_interval
                await self.rebalance_round()
        self._publish(now)
        if self.is_leader:
            await self._announce()

    def _status(self) -> dict[str, Any]:
        return {
            "role": "control",
            "id": self.id,
            "state": "ready",
            "leader": self.is_leader,
            "version": __version__,
            "started": self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def _publish(self, now: float) -> None:
        self.latest = self.view.render(now, leader=self.leader)
        counts = {(role, state): 0 for role in ("node", "router", "control") for state in STATES}
        for m in self.latest["members"]:
            if (m["role"], m["state"]) in counts:
                counts[(m["role"], m["state"])] += 1
        for (role, state), n in counts.items():
            self.metrics.members.labels(role, state).set(n)
        self.metrics.connections.set(self.latest["totals"]["connections"])
        self.metrics.spread.set(self.latest["balance"]["spread"])
        self.updated.set()
        self.updated = asyncio.Event()

    async def _announce(self) -> None:
        """(leader) Publish the view to the cluster channel, bounded by the message size."""
        view = bounded_view(self.latest, self.settings.max_message_size)
        trimmed = view is not self.latest
        if trimmed and not self._trimmed:
            log.warning(
                "control.view.trimmed", members=len(self.latest["members"]), limit=self.settings.max_message_size
            )
        self._trimmed = trimmed
        await self.engine.publish(CLUSTER_CHANNEL, view)

    # --- crash cleanup (leader) ---------------------------------------------------------------
    async def _reap(self, now: float) -> None:
        """Clean up members whose heartbeat lapsed, then forget them after the retention time.
        Nothing is declared dead until this replica has seen the engine healthy for a whole
        timeout: after an outage everyone's heartbeats are old, and that is not a crash."""
        s = self.settings
        if self._healthy_since is None or now - self._healthy_since < s.member_timeout:
            return
        for member in self.view.dead(now):
            seen, status = self._members[member]
            if status.get("state") == "dead":
                if now - float(status.get("dead_since", seen)) > s.dead_retention:
                    await self.engine.forget_member(member)
                    log.info("control.member.forgotten", member=member)
                continue
            role, _, ident = member.partition(":")
            removed: dict[str, int] = {}
            if role == "node":
                started = time.monotonic()
                removed = await self.engine.cleanup_node(ident)
                self.metrics.cleanup_seconds.observe(time.monotonic() - started)
                self.metrics.cleanups.inc()
                for kind, n in removed.items():
                    self.metrics.cleaned.labels(kind).inc(n)
            await self.engine.mark_member(member, {**status, "state": "dead", "dead_since": now, "cleaned": removed})
            log.warning("control.member.dead", member=member, silent_for=round(now - seen, 1), **removed)

    # --- operator actions ---------------------------------------------------------------------
    def _live_node(self, node: str) -> None:
        member = f"node:{node}"
        if member not in self._members:
            raise NotFound(f"no node {node!r} in the cluster")
        if self.view.state(member, self._clock()) == "dead":
            raise Conflict(f"node {node!r} is dead")

    async def drain_node(self, node: str, window: float | None = None) -> dict[str, Any]:
        """Order `node` to drain (readiness 503, advisories, closes spread over the window)."""
        if f"node:{node}" not in self._members:  # it may have joined since the last tick: look again
            self._members = await self.engine.members()
            self.view.update(self._members)
        self._live_node(node)
        args: dict[str, Any] = {} if window is None else {"window": window}
        await self.engine.order(node, Order("drain", args))
        self.metrics.drain_requests.inc()
        log.info("control.node.drain", node=node, window=window)
        return {"node": node, "state": "draining", **args}

    async def rebalance_round(self) -> dict[str, int] | None:
        """Ask the nodes above the bound to shed connections. Returns the plan ({} when the spread
        is within bounds), or None when it cannot be planned yet: the previous round's clients are
        still moving (its shed window, their reconnects, and one report from every node must
        pass: planning from older reports would move the same connections twice, or see balance
        that is not there), or another replica's round holds the lease for as long."""
        s, now = self.settings, self._clock()
        window = s.rebalance_interval / 2
        settle = window + _RECONNECT_SLACK + 2 * s.tick
        if now < self._fresh_after or self.view.oldest_report(now) < self._fresh_after:
            return None
        nodes = self.view.nodes(now)
        shed = plan(nodes, ratio=s.rebalance_ratio, max_per_node=s.rebalance_max, min_mean=s.rebalance_min_mean)
        if not shed:
            return {}
        if not await self.engine.hold_lease(ROUND_LEASE, self.id, settle):
            return None
        self._fresh_after = now + settle
        for node, count in shed.items():
            await self.engine.order(node, Order("shed", {"count": count, "window": window}))
        self.metrics.rebalance_rounds.inc()
        self.metrics.rebalance_requests.inc(sum(shed.values()))
        log.info("control.rebalance.round", plan=shed, spread=round(spread(nodes), 3))
        return shed

    async def request_rebalance(self) -> tuple[str, dict[str, Any]]:
        """`POST /admin/rebalance`: run a round now and keep going (one round per interval) until
        the spread is within bounds. Returns (outcome, facts): "balanced", "started" or "busy"."""
        nodes = self.view.nodes(self._clock())
        facts: dict[str, Any] = {
            "nodes": nodes,
            "spread": round(spread(nodes), 4),
            "bound": self.settings.rebalance_ratio,
        }
        first = await self.rebalance_round()
        if first is None:
            return "busy", facts
        if not first:
            return "balanced", facts
        if self._campaign is None or self._campaign.done():
            self._campaign = self._tasks.spawn(self._keep_rebalancing(), name="control.rebalance")
        return "started", {**facts, "plan": first}

    async def _keep_rebalancing(self) -> None:
        deadline = self._clock() + _CAMPAIGN_LIMIT
        while self._clock() < deadline:
            await asyncio.sleep(min(self.settings.rebalance_interval, self.settings.tick))
            try:
                if await self.rebalance_round() == {}:
                    log.info("control.rebalance.done")
                    return
            except EngineUnavailable:
                continue
