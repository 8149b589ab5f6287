"""What the connection loop needs from a transport (WebSocket or SSE), and what they report.

A transport is one attempt: `open()` (raises :class:`OpenFailed`), then `frames()` until the
connection ends, then `closed` says how. Frames are the decoded server objects of CONTRACT §4–6;
SSE events are turned into the same objects (their `id` cursor rides along in :class:`Inbound`).
Transport errors are translated here, at the boundary, never above.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import HeraldClientError

__all__ = ["Inbound", "Closed", "OpenFailed", "Transport", "INVALID"]

#: The `type` of an Inbound made from a frame that could not be decoded.
INVALID = "_invalid"


@dataclass(frozen=True, slots=True)
class Inbound:
    frame: dict[str, Any]
    cursor: str | None = None  # SSE: the event's `id` (every channel's position)


@dataclass(frozen=True, slots=True)
class Closed:
    """How a connection ended: a close code (see `policy.py`) and the advisory's after_ms, if any."""

    code: int
    reason: str = ""
    after_ms: int | None = None


class OpenFailed(Exception):
    """An attempt that never opened. `upgrade_refused`: the server answered HTTP without upgrading
    (a proxy stripping WebSocket) — the cue to fall back to SSE. `error`: the server's error body."""

    def __init__(
        self,
        code: int,
        reason: str,
        *,
        status: int | None = None,
        upgrade_refused: bool = False,
        error: HeraldClientError | None = None,
    ) -> None:
        super().__init__(reason)
        self.code, self.reason, self.status = code, reason, status
        self.upgrade_refused = upgrade_refused
        self.error = error


class Transport(Protocol):
    kind: Literal["ws", "sse"]
    url: str

    @property
    def closed(self) -> Closed:
        """How the connection ended (meaningful once `frames()` is over)."""
        ...

    async def open(self) -> dict[str, Any]:
        """Connect; returns the opening facts (WS: the `connected` frame; SSE: {"client": id})."""
        ...

    def frames(self) -> AsyncIterator[Inbound]:
        """Incoming frames until the connection ends (then `closed` is set)."""
        ...

    async def send(self, obj: dict[str, Any]) -> None:
        """Send one command (WS only); PayloadTooBig over the size limit, ConnectionLost if closed."""
        ...

    async def close(self) -> None:
        """Close from our side (code 1000); `frames()` then ends."""
        ...
