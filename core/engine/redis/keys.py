"""Every Redis key Herald uses, one function per kind. No other module formats a key.

Keys of a partition carry the hash tag `{p}` so they share a Redis Cluster slot and one shard.
"""

from __future__ import annotations

__all__ = [
    "hist_key",
    "log_key",
    "epoch_key",
    "subs_key",
    "idem_key",
    "presence_key",
    "presence_exp_key",
    "users_key",
    "lease_key",
    "named_lease_key",
    "inbox_key",
    "node_index_key",
    "cleaned_key",
    "MEMBERS_KEY",
    "MEMBER_STATUS_KEY",
    "INCARNATION_KEY",
    "GROUP",
    "LOG_CAP",
]

#: Approximate cap of a partition log (routers trim far below it).
LOG_CAP = 1_000_000
#: Consumer group of the routers on every partition log.
GROUP = "routers"
#: Zset of cluster members (role:id → last heartbeat ms), on shard 0.
MEMBERS_KEY = "members"
#: Hash of cluster members' last status (role:id → JSON), on shard 0.
MEMBER_STATUS_KEY = "member-status"
#: A random marker set once per shard: when it changes, the shard lost its data.
INCARNATION_KEY = "incarnation"


def hist_key(p: int, channel: str) -> str:
    return f"hist:{{{p}}}:{channel}"


def log_key(p: int) -> str:
    return f"log:{{{p}}}"


def epoch_key(p: int) -> str:
    return f"epoch:{{{p}}}"


def subs_key(p: int) -> str:
    return f"subs:{{{p}}}"


def idem_key(p: int, key: str) -> str:
    return f"idem:{{{p}}}:{key}"


def presence_key(p: int, channel: str) -> str:
    return f"presence:{{{p}}}:{channel}"


def presence_exp_key(p: int, channel: str) -> str:
    return f"presence-exp:{{{p}}}:{channel}"


def users_key(p: int, user: str) -> str:
    """Connections of `user`, in the partition of its personal channel."""
    return f"uconn:{{{p}}}:{user}"


def lease_key(p: int) -> str:
    return f"lease:{{{p}}}"


def named_lease_key(name: str) -> str:
    """A cluster-wide lease (the control plane's leader), on shard 0."""
    return f"lease:{name}"


def inbox_key(node: str) -> str:
    return f"inbox:{{{node}}}"


def node_index_key(node: str) -> str:
    """Set of what a node registered beyond subscriptions (presence entries, user connections),
    so the control plane can remove them when the node dies."""
    return f"nodeidx:{{{node}}}"


def cleaned_key(node: str) -> str:
    """Tombstone left by the control plane after cleaning up `node` as dead: if the node was only
    paused, it finds this on its next heartbeat and registers everything again."""
    return f"cleaned:{{{node}}}"
