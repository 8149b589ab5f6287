"""Requests waiting for their reply, matched by the integer `id` the server echoes (CONTRACT §5)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

__all__ = ["Pending", "RequestTable"]


@dataclass(slots=True)
class Pending:
    id: int
    msg: dict[str, Any]  # as sent, with its id
    future: asyncio.Future[dict[str, Any]] | None  # None: the connection loop handles the reply itself

    @property
    def kind(self) -> str:
        return str(self.msg.get("type"))

    def resolve(self, frame: dict[str, Any]) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(frame)

    def fail(self, exc: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)


class RequestTable:
    __slots__ = ("_ids", "_pending")

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, msg: dict[str, Any], future: asyncio.Future[dict[str, Any]] | None = None) -> Pending:
        rid = next(self._ids)
        pending = Pending(rid, {**msg, "id": rid}, future)
        self._pending[rid] = pending
        return pending

    def pop(self, rid: object) -> Pending | None:
        return self._pending.pop(rid, None) if type(rid) is int else None

    def drain(self) -> list[Pending]:
        out, self._pending = list(self._pending.values()), {}
        return out
