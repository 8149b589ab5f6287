"""Stable hashing: values fixed across processes, and the movement properties the cluster relies on."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from herald.core.hashing import jump_hash, partition_of, rendezvous_owner, shard_of_partition, stable_hash


def test_stable_hash_is_the_same_in_another_process() -> None:
    """Partitioning must agree between every node and router: no per-process hash seed."""
    code = "from herald.core.hashing import stable_hash; print(stable_hash('room:42'))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert int(out.stdout) == stable_hash("room:42")


def test_jump_hash_matches_the_reference_values() -> None:
    """Known outputs of the reference implementation (Lamping & Veach; the same vectors as the Go
    and ClickHouse ports)."""
    assert [jump_hash(k, 1) for k in range(5)] == [0] * 5
    assert jump_hash(256, 1024) == 520
    assert jump_hash(42, 57) == 43
    assert jump_hash(0xDEAD10CC, 666) == 361


def test_jump_hash_moves_about_one_over_n_plus_one_when_a_bucket_is_added() -> None:
    """Growing 10 → 11 buckets moves ~1/11 of keys, and only to the new bucket."""
    keys = [stable_hash(f"k{i}") for i in range(20000)]
    moved = [(jump_hash(k, 10), jump_hash(k, 11)) for k in keys]
    changed = [(a, b) for a, b in moved if a != b]
    assert all(b == 10 for _, b in changed)
    assert abs(len(changed) / len(keys) - 1 / 11) < 0.01


def test_partitions_spread_evenly() -> None:
    counts = Counter(partition_of(f"user:{i}", 64) for i in range(64000))
    assert len(counts) == 64 and max(counts.values()) < 1.15 * 1000 and min(counts.values()) > 0.85 * 1000
    assert {shard_of_partition(p, 1) for p in range(64)} == {0}
    assert set(Counter(shard_of_partition(p, 3) for p in range(64))) == {0, 1, 2}


def test_rendezvous_moves_only_the_leaving_members_partitions() -> None:
    members = ["r1", "r2", "r3"]
    before = {p: rendezvous_owner(p, members) for p in range(256)}
    after = {p: rendezvous_owner(p, ["r1", "r3"]) for p in range(256)}
    assert all(after[p] == before[p] for p in range(256) if before[p] != "r2")
    grown = {p: rendezvous_owner(p, [*members, "r4"]) for p in range(256)}
    moved = [p for p in range(256) if grown[p] != before[p]]
    assert all(grown[p] == "r4" for p in moved) and 0.15 < len(moved) / 256 < 0.35
    assert rendezvous_owner(1, []) is None
