"""redis-py's asyncio connection, packing commands with hiredis's C packer.

redis-py's synchronous client packs with hiredis when it is installed; its asyncio client packs
every argument in Python, which costs a node about 8 % of its CPU when it publishes thousands of
scripts a second. The bytes are the same (tests/unit/test_redis_packing.py compares them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hiredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

__all__ = ["HiredisPackingConnection"]


def _pack(args: tuple[Any, ...]) -> bytes:
    first = args[0]
    if isinstance(first, str):  # "SCRIPT LOAD": a multi-word command name, split as redis-py does
        args = (*first.encode().split(), *args[1:])
    elif b" " in first:
        args = (*first.split(), *args[1:])
    try:
        packed: bytes = hiredis.pack_command(args)
        return packed
    except TypeError as exc:
        raise DataError(str(exc)) from exc


class HiredisPackingConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return [_pack(args)]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join([_pack(tuple(cmd)) for cmd in commands])]
