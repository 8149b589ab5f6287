"""The subscription registry of one partition: which nodes have subscribers of which channel.

Loaded from the partition's snapshot hash when the router takes the partition, then updated by the
absolute "node n has / has no subscribers of c" records of the log, in the same order as the
publications, so forwarding decisions follow the log order.
"""

from __future__ import annotations

import builtins

__all__ = ["Registry"]


class Registry:
    __slots__ = ("_nodes",)

    def __init__(self) -> None:
        self._nodes: dict[str, set[str]] = {}

    @classmethod
    def from_snapshot(cls, fields: dict[bytes, bytes] | dict[str, str]) -> Registry:
        reg = cls()
        for field in fields:
            text = field.decode() if isinstance(field, bytes) else field
            channel, _, node = text.partition("\n")
            reg.set(channel, node, True)
        return reg

    def set(self, channel: str, node: str, on: bool) -> None:
        nodes = self._nodes.get(channel)
        if on:
            if nodes is None:
                self._nodes[channel] = {node}
            else:
                nodes.add(node)
        elif nodes is not None:
            nodes.discard(node)
            if not nodes:
                del self._nodes[channel]

    def nodes(self, channel: str) -> builtins.set[str]:
        return self._nodes.get(channel, set())

    def __len__(self) -> int:
        return len(self._nodes)
