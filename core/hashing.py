"""Stable hashing: channel → partition → shard, and rendezvous ownership.

Never Python's `hash()` (randomised per process). `jump_hash` is Lamping & Veach's jump consistent
hash: growing from n to n+1 buckets moves only ~1/(n+1) of the keys, all of them to the new bucket.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["stable_hash", "jump_hash", "partition_of", "shard_of_partition", "rendezvous_owner"]

_MASK64 = (1 << 64) - 1


def stable_hash(value: str) -> int:
    """A 64-bit hash that is the same in every process, on every machine, forever."""
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit `key` into [0, buckets)."""
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    key &= _MASK64
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def partition_of(channel: str, partitions: int) -> int:
    return jump_hash(stable_hash(channel), partitions)


def shard_of_partition(partition: int, shards: int) -> int:
    return jump_hash(stable_hash(f"partition:{partition}"), shards)


def rendezvous_owner(partition: int, members: Iterable[str]) -> str | None:
    """Highest-random-weight owner of `partition` among `members` (None when there are none).
    When a member leaves, only its partitions move; when one joins, it takes ~1/(n+1) of them."""
    best, best_weight = None, -1
    for member in members:
        weight = stable_hash(f"{member}/{partition}")
        if weight > best_weight or (weight == best_weight and member > (best or "")):
            best, best_weight = member, weight
    return best
