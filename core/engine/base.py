"""The engine's roles, with their ordering and atomicity guarantees.

An engine owns durable channel history (offsets and epochs), the registry of which nodes need
which channels, presence, per-user connection counts and the cluster's membership. Its interface
is split by the roles its callers use (as centrifuge splits Broker and PresenceManager):

* :class:`Broker` — publish, history, subscription registrations, signals, deliveries to a node;
* :class:`Presence` — presence entries, per-user connection counts, disconnecting a user;
* :class:`Coordination` — membership heartbeats, leases, orders, cleanup of a dead node;
* :class:`PartitionLog` — the partition logs as a router reads and forwards them (Redis only:
  in one process, MemoryEngine delivers without a log);
* :class:`Engine` — all of the first three with a lifecycle: what a node needs.

A router takes a PartitionLog and a Coordination; the control plane a Coordination and a Broker
(it publishes the cluster view); the server API a whole Engine. Nodes never know whether their
engine is in-process (MemoryEngine) or shared through Redis (RedisEngine): they call these methods
and receive deliveries through the callback given to :meth:`Broker.attach`.

Guarantees every implementation gives (the contract suite in tests/contract checks them):

* ``publish`` is atomic: the message is in the channel history and on its way to subscribed nodes,
  or — on ``EngineUnavailable`` — in neither. Offsets of one channel strictly increase.
* Deliveries of one channel reach a node in offset order. A node may see a publication more than
  once (at-least-once); nodes dedupe by offset.
* ``history`` after ``subscribe`` returns every message the node will not also receive live, so
  register-then-read (DESIGN invariant 5) loses nothing.
* ``recovered`` is False exactly when the engine cannot prove that it returned every message after
  ``since``: the epoch differs, retention dropped some, or the offset is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..protocol.envelope import ChannelName, Delivery, Epoch, Offset, Order, Position, Publication
from ..protocol.errors import EngineUnavailable

__all__ = [
    "Lifecycle",
    "Broker",
    "Presence",
    "Coordination",
    "PartitionLog",
    "Engine",
    "LogEntry",
    "LogLost",
    "PublishRequest",
    "PublishResult",
    "HistoryResult",
    "PresenceEntry",
    "DeliverFn",
    "leave_frame",
]

DeliverFn = Callable[[Sequence[Delivery]], None]
#: One entry of a partition log: its id and its fields.
LogEntry = tuple[bytes, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class PublishRequest:
    channel: ChannelName
    data: Any
    event: str = "message"
    sender: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    channel: ChannelName
    offset: Offset
    epoch: Epoch

    def to_wire(self) -> dict[str, str]:
        return {"channel": self.channel, "offset": self.offset, "epoch": self.epoch}


@dataclass(frozen=True, slots=True)
class HistoryResult:
    channel: ChannelName
    epoch: Epoch
    offset: Offset  # the latest offset of the channel ("0-0" when it has none)
    recovered: bool
    messages: list[Publication] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    client: str
    user: str
    node: str
    status: str = "online"
    info: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"client": self.client, "user": self.user, "status": self.status, "info": self.info, "node": self.node}


def leave_frame(channel: str, entry: PresenceEntry) -> dict[str, Any]:
    """The `leave` signal of a namespace with join/leave events (a node's or the control plane's)."""
    return {"type": "leave", "channel": channel, "client": entry.client, "user": entry.user}


class Lifecycle(Protocol):
    """Starting and stopping an engine (every role of one engine shares its connections)."""

    async def start(self) -> None:
        """Connect; after this the engine is usable."""

    async def close(self) -> None:
        """Release connections and background tasks."""

    async def healthy(self) -> bool:
        """True when the engine can serve requests (readiness)."""


class Broker(Protocol):
    """Channels: history with offsets and epochs, and deliveries to the nodes that subscribe.
    All methods may raise EngineUnavailable."""

    async def attach(self, node: str, deliver: DeliverFn) -> None:
        """Route deliveries for `node` to `deliver` (called on the event loop, in channel order).
        Everything routed to `node` after this returns is delivered."""

    def detach(self, node: str) -> None:
        """Stop delivering to `node` and drop its registrations."""

    async def publish(
        self,
        channel: ChannelName,
        data: Any,
        *,
        event: str = "message",
        sender: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Append to the channel's history and deliver to every node subscribed to it, atomically.

        A repeated `idempotency_key` within 5 minutes returns the first result and publishes nothing.
        """

    async def publish_batch(self, requests: Sequence[PublishRequest]) -> list[PublishResult | Exception]:
        """Publish many messages with as few round trips as the engine allows. Each message is
        atomic on its own (as `publish`); the results come in request order, an exception in place
        of a message that was not published (EngineUnavailable: it is not half-published)."""

    async def history(
        self, channel: ChannelName, *, since: Position | None = None, limit: int | None = None
    ) -> HistoryResult:
        """Messages after `since` (oldest first, at most `limit`), or the latest `limit` without it."""

    async def subscribe(self, node: str, channel: ChannelName) -> None:
        """Register that `node` has at least one local subscriber of `channel`. Idempotent."""

    async def unsubscribe(self, node: str, channel: ChannelName) -> None:
        """Register that `node` has no more local subscribers of `channel`. Idempotent."""

    async def signal(self, channel: ChannelName, frame: dict[str, Any]) -> None:
        """Deliver an ephemeral frame (no history, no offset) to the channel's subscribers."""

    def backlog(self, node: str) -> int:
        """Deliveries waiting for `node` (its inbox length; 0 when delivery is in-process)."""


class Presence(Protocol):
    """Who is in a channel, and how many connections each user has. All methods may raise
    EngineUnavailable."""

    async def presence_add(self, channel: ChannelName, entry: PresenceEntry) -> None: ...

    async def presence_remove(self, channel: ChannelName, client: str) -> None: ...

    async def presence(self, channel: ChannelName) -> list[PresenceEntry]: ...

    async def user_acquire(self, user: str, client: str, limit: int) -> bool:
        """Count a connection of `user`; False (and nothing counted) when it would exceed `limit`."""

    async def user_release(self, user: str, client: str) -> None: ...

    async def disconnect_user(self, user: str, code: int) -> int:
        """Close every connection of `user` on every node holding one (those nodes are subscribed
        to the user's personal channel); returns how many connections there were."""


class Coordination(Protocol):
    """Membership, leases, orders and the cleanup of dead nodes (nodes, routers and the control
    plane). All methods may raise EngineUnavailable."""

    async def info(self) -> dict[str, Any]:
        """Cluster facts for /api/info: nodes, routers, partitions."""

    async def heartbeat(self, member: str, status: dict[str, Any]) -> bool:
        """Record that `member` ("node:<id>", "router:<id>", "control:<id>") is alive, with its
        status (JSON-able). Returns True when the member had been cleaned up as dead meanwhile (it
        was paused, not gone): its registrations are restored, but deliveries routed while it was
        considered dead did not reach it, so its clients must resume."""

    async def members(self) -> dict[str, tuple[float, dict[str, Any]]]:
        """Every registered member: member -> (last heartbeat, epoch seconds; its last status)."""

    async def mark_member(self, member: str, status: dict[str, Any]) -> None:
        """Replace a member's status without refreshing its heartbeat (control marks the dead)."""

    async def forget_member(self, member: str) -> None:
        """Remove a member from the registry (it left, or it is dead and cleaned up)."""

    async def alive(self, role: str, within: float) -> list[str]:
        """The ids of members of `role` ("node", "router", "control") whose last heartbeat is at
        most `within` seconds old, sorted."""

    async def hold_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or keep the lease `name` for `ttl` seconds; True when `holder` holds it."""

    async def release_lease(self, name: str, holder: str) -> None:
        """Give up the lease if `holder` holds it."""

    async def order(self, node: str, order: Order) -> None:
        """Send a control-plane order to `node`; it arrives through its delivery callback."""

    async def cleanup_node(self, node: str) -> dict[str, int]:
        """Remove what a dead node left behind: its subscription registrations, presence entries
        (with `leave` signals where the namespace has join/leave), connection counts and inbox.
        Returns how many of each were removed."""


class Engine(Lifecycle, Broker, Presence, Coordination, Protocol):
    """Every role of shared state, with its lifecycle: what a node needs."""


class LogLost(EngineUnavailable):
    """A shard restarted without its data: its partition logs and their consumer group are gone
    (recreate the groups with `ensure_group`, then claim what is pending again)."""


class PartitionLog(Protocol):
    """The partition logs, as the routers read them. Partitions are grouped by shard: the
    partitions of one shard are read together. All methods may raise EngineUnavailable."""

    @property
    def partitions(self) -> int:
        """How many partitions there are."""

    @property
    def shards(self) -> int:
        """How many shards the partitions are spread over."""

    def shard_of(self, p: int) -> int:
        """The shard of partition `p`."""

    async def acquire(self, p: int, holder: str, ttl_ms: int) -> bool:
        """Take or keep partition `p`'s lease for `ttl_ms`; True when `holder` holds it."""

    async def release(self, p: int, holder: str) -> None:
        """Give up partition `p`'s lease if `holder` holds it."""

    async def ensure_group(self, p: int) -> None:
        """Create the routers' consumer group on `p`'s log (and the log) unless it exists."""

    async def subscriptions(self, p: int) -> dict[bytes, bytes]:
        """The registry snapshot of `p`: one field "<channel>\\n<node>" per registration."""

    async def read(
        self, shard: int, partitions: Sequence[int], consumer: str, count: int, block_ms: int
    ) -> list[tuple[int, list[LogEntry]]]:
        """New entries of `partitions` (all on `shard`) for `consumer`, waiting up to `block_ms`;
        (partition, entries) pairs. Raises LogLost when the shard lost its logs."""

    async def claim(self, p: int, consumer: str, start: str, count: int) -> tuple[str, list[LogEntry]]:
        """Take over up to `count` unacknowledged entries of `p` from `start`: (next cursor,
        entries); the cursor is "0-0" when there are no more."""

    async def forward(
        self, shard: int, inboxes: dict[str, list[list[Any]]], acks: dict[int, list[bytes]], trims: dict[int, bytes]
    ) -> None:
        """Append each node's batch to its inbox, then acknowledge `acks` (entry ids per
        partition of `shard`) and trim the logs of `trims` to the given id. Never an ack before
        its append."""

    async def lag(self, p: int) -> int:
        """Entries of `p`'s log not yet read by the routers."""
