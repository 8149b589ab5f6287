"""A deadline for every request head, and a cap on the connections still sending one.

Every component's listener (node, router, control) puts a `HeadGuard` in front of each new
connection: the connection must deliver a complete request head within `head_timeout` of its
opening (a deadline: bytes that trickle in do not extend it), and while it has not, it counts
against `max_pending_heads`. Over the cap a new connection is answered with a ready-made `503` and
closed at once, before anything is read or parsed. Only a complete head is handed on, to aiohttp or
(node/edge.py) to the WebSocket edge and the publish fast path; these apply the same deadline to
the heads of later requests on a kept-alive connection (core/web/handler.py, core/web/fastpath.py).

`HeadGate` is the listener's shared state: the count, the limits, and the rate-limited log line
for malformed requests.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from herald.core.protocol.handshake import MAX_HEAD, head_end
from herald.core.protocol.ratelimit import TokenBucket

from .http import error_body, http_error

__all__ = ["HttpLimits", "HeadGate", "HeadGuard", "REFUSAL", "ProtocolFactory", "hand_off", "guard_factory"]

log = structlog.get_logger("herald.http")

ProtocolFactory = Callable[[], asyncio.Protocol]


def hand_off(transport: asyncio.Transport, factory: ProtocolFactory, data: bytes, *, eof: bool = False) -> None:
    """Give a connection whose first `data` was read by an edge protocol to `factory`'s protocol
    (aiohttp's request handler), as if it had been that protocol's from the start; `eof`: the
    client has already half-closed its side."""
    protocol = factory()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if data:
        protocol.data_received(data)
    if eof and not transport.is_closing() and not protocol.eof_received():
        transport.close()


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What an HTTP connection may take before and between its requests."""

    head_timeout: float = 10.0  # seconds to a complete request head, from its first byte (first request: from accept)
    keepalive_timeout: float = 5.0  # seconds an idle kept-alive connection stays open after an answer
    max_pending_heads: int = 4096  # connections with a head in progress, per listener (the listen backlog)

    @classmethod
    def from_config(cls, config: Any) -> HttpLimits:
        return cls(config.head_timeout, config.keepalive_timeout, config.max_pending_heads)


_BUSY = error_body("overloaded", "too many connections waiting for their request head: try again later")
#: The cap's answer: built once, written without parsing anything (no Date: optional on a 5xx).
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\n%b" % (len(_BUSY), _BUSY)
)
_MALFORMED_RATE = 5.0  # malformed-request log lines per second, at most (a burst of 10)


class HeadGate:
    """One listener's count of connections with a head in progress, and its limits."""

    __slots__ = ("limits", "pending", "refused", "_bucket", "_suppressed")

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.pending = 0
        self.refused = 0
        self._bucket = TokenBucket(_MALFORMED_RATE, 10, time.monotonic())
        self._suppressed = 0

    def acquire(self) -> bool:
        """Count one more head in progress; False (and nothing counted) when the cap is reached."""
        if self.pending >= self.limits.max_pending_heads:
            self.refused += 1
            return False
        self.pending += 1
        return True

    def release(self) -> None:
        self.pending -= 1

    def malformed(self, peer: str | None, reason: str, status: int) -> None:
        """One short WARNING per malformed request, at most _MALFORMED_RATE a second; the lines
        left out are counted in the next one."""
        if not self._bucket.take(time.monotonic()):
            self._suppressed += 1
            return
        suppressed, self._suppressed = self._suppressed, 0
        log.warning("http.request.malformed", peer=peer, reason=reason, status=status, suppressed=suppressed)


#: A byte no request line may hold (RFC 9112 §3: method, target and version are visible ASCII).
_NOT_A_REQUEST_LINE = re.compile(rb"[^\x21-\x7e \r]")
_TOO_LARGE = http_error(431, "bad_request", f"request head over {MAX_HEAD} bytes")


class HeadGuard(asyncio.Protocol):
    """A new connection until its first request head is complete; then `head_complete()` (by
    default: aiohttp's protocol takes the connection with everything read so far)."""

    __slots__ = ("gate", "fallback", "transport", "buf", "timer", "counted", "line_done")

    def __init__(self, gate: HeadGate, fallback: ProtocolFactory) -> None:
        self.gate = gate
        self.fallback = fallback
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False
        self.line_done = False  # the request line is complete (and was all visible ASCII)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.gate.acquire():
            transport.write(REFUSAL)  # type: ignore[attr-defined]
            transport.close()
            return
        self.counted = True
        self.timer = asyncio.get_running_loop().call_later(self.gate.limits.head_timeout, self._expired)

    def _expired(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.close()

    def _decided(self) -> None:
        """The head is complete (or the connection gone): no deadline, no longer counted."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.counted:
            self.counted = False
            self.gate.release()

    def connection_lost(self, exc: Exception | None) -> None:
        self._decided()

    def eof_received(self) -> bool | None:
        return None  # the head can no longer be completed: the transport closes

    def data_received(self, data: bytes) -> None:
        if not self.counted or self.transport is None or self.transport.is_closing():
            return  # refused, or past its deadline
        buf = self.buf
        searched = max(0, len(buf) - 2)  # a blank line may straddle two reads
        buf += data
        if head_end(buf, searched) < 0:
            if not self.line_done:  # only the new bytes are looked at: a trickle costs O(n), not O(n²)
                line_end = buf.find(b"\n", searched)
                self.line_done = line_end >= 0
                if _NOT_A_REQUEST_LINE.search(buf, searched, len(buf) if line_end < 0 else line_end):
                    self._decided()  # not HTTP (TLS to a plain port, a scanner): aiohttp answers 400 at once
                    return self.hand_off()
            if len(buf) >= MAX_HEAD:
                self._decided()
                self.transport.write(_TOO_LARGE)
                self.transport.close()
            return
        self._decided()
        self.head_complete()

    def head_complete(self) -> None:
        self.hand_off()

    def hand_off(self) -> None:
        buf, self.buf = bytes(self.buf), bytearray()
        hand_off(self.transport, self.fallback, buf)  # type: ignore[arg-type]


def guard_factory(gate: HeadGate) -> Any:
    """For `serve_until_signal`: every connection starts with a HeadGuard."""
    return lambda fallback: lambda: HeadGuard(gate, fallback)
