"""Which partitions this router should own, and the leases that make ownership exclusive.

Desired ownership is pure rendezvous hashing over the live routers; a lease in Redis (SET PX,
renewed by a compare-and-set script) guarantees no two routers read a partition at once. The old
owner releases between two reads, so the new owner starts exactly where the group stopped.
"""

from __future__ import annotations

from collections.abc import Iterable

from herald.core.hashing import rendezvous_owner

__all__ = ["desired_partitions"]


def desired_partitions(me: str, routers: Iterable[str], partitions: int) -> set[int]:
    """The partitions rendezvous hashing gives to `me` among `routers` (which should include me)."""
    members = sorted(set(routers) | {me})
    return {p for p in range(partitions) if rendezvous_owner(p, members) == me}
