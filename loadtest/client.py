"""A simulated client: connect, subscribe, receive, and reconnect-and-resume as CONTRACT §5/§6 say.

The transports (`wsclient.py`, `sseclient.py`) implement one connection, `_session()`, and say
how it ended; this base class runs the bounded reconnect loop around it and accounts every
delivered message. The close-code policy is the table of CONTRACT §5:

| ended with | reconnect | after | target |
|---|---|---|---|
| 1000, 4003, 1009 | no | | |
| 1012 (drain / rebalance) | yes | `after_ms` + 0-250 ms jitter | the next one |
| 4008 (slow consumer), 4000 (idle) | yes | 0-50 ms jitter | same |
| 4001 (token expired) | yes, with a fresh token | 0-50 ms | same |
| 1013 (full), HTTP 503, refused | yes | backoff | the next one |
| 4029, 1001, 1011, abnormal, EOF | yes | backoff | same (the next one after 2 failures) |
| dropped by a storm | yes | the storm's downtime | same |

Backoff is 50 ms doubling to 2 s, with jitter, reset by a successful connection.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from typing import Any, NamedTuple

from .accounting import PublishLog, ReceiverLog, Verdict
from .config import LoadConfig
from .marker import read_marker
from .plan import Plan
from .stats import WorkerStats

__all__ = ["Client", "Ended", "after_close", "backoff", "shutdown_socket"]

_NO_RECONNECT = frozenset({1000, 4003, 1009})
_SWITCH = frozenset({1012, 1013})


class Ended(NamedTuple):
    """How one connection ended and what the client does next."""

    kind: str  # counted under close_codes (when it had connected) or connect_errors
    connected: bool  # it got as far as being subscribed
    reconnect: bool
    delay: float
    switch: bool  # try the next target


def backoff(failures: int, rng: random.Random) -> float:
    return min(2.0, 0.05 * 2.0 ** min(failures, 6)) * (0.5 + rng.random() / 2)


def after_close(code: int | None, after_ms: Any, failures: int, rng: random.Random) -> tuple[bool, float, bool]:
    """(reconnect, delay, switch target) after a WebSocket closed with `code` (None: no close frame)."""
    if code in _NO_RECONNECT:
        return False, 0.0, False
    if code == 1012:
        wait = after_ms / 1000 if isinstance(after_ms, int) and 0 <= after_ms <= 60_000 else 0.5
        return True, wait + rng.random() * 0.25, True
    if code in (4008, 4000, 4001):
        return True, rng.random() * 0.05, False
    return True, backoff(failures, rng), code in _SWITCH or failures >= 2


def shutdown_socket(sock: Any) -> bool:
    """Cut a connection under the event loop's feet (a network drop): shut down a duplicate of its
    socket, which works for uvloop's pseudo-sockets too."""
    try:
        dup = socket.socket(fileno=os.dup(sock.fileno()))
    except (AttributeError, OSError, ValueError):
        return False
    try:
        dup.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        dup.close()


class Client:
    """One simulated user with one connection at a time."""

    def __init__(
        self,
        i: int,
        plan: Plan,
        stats: WorkerStats,
        session: Any,
        publog: PublishLog,
        connect_gate: asyncio.Semaphore,
        rng: random.Random,
    ) -> None:
        self.i = i
        self.plan = plan
        self.cfg: LoadConfig = plan.cfg
        self.user = plan.user(i)
        self.stats = stats
        self.counts = stats.counts
        self.session = session
        self.publog = publog
        self.gate = connect_gate
        self.rng = rng
        self.log = ReceiverLog(plan.channels(i))
        self.target = i % len(self.cfg.targets)
        self.token = plan.token(i)
        self.accounted = False  # subscribed when publishing started: what it misses counts as lost
        self.online = False
        self.ever_ready = False
        self.finished = False
        self.stopping = False
        self.first_ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._wake = asyncio.Event()
        self._dropped_for: float | None = None  # set by drop(): the downtime
        self._failures = 0
        self._reconnects_left = self.cfg.max_reconnects

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self, first_deadline: float) -> None:
        """Connect and stay connected until stopped; every loop is bounded by `max_reconnects`
        (and, until the first success, by `first_deadline` on the monotonic clock)."""
        kinds = self.stats.kinds
        try:
            while not self.stopping:
                ended = await self._session()
                was_online = self.online  # got as far as subscribed: the backoff starts over
                self._set_online(False)
                if self.stopping:
                    break
                kinds["close_codes" if ended.connected else "connect_errors"][ended.kind] += 1
                self._failures = 0 if was_online else self._failures + 1
                if not ended.reconnect:
                    break
                if not self.ever_ready and time.monotonic() > first_deadline:
                    break
                if self._reconnects_left <= 0:
                    self.counts["gave_up"] += 1
                    break
                self._reconnects_left -= 1
                self.counts["reconnect_attempts"] += 1
                if ended.switch and len(self.cfg.targets) > 1:
                    self.target = (self.target + 1) % len(self.cfg.targets)
                if ended.kind == "4001":
                    self.token = self.plan.token(self.i)
                await self._pause(ended.delay)
        finally:
            self._set_online(False)
            self.finished = True
            if not self.first_ready.done():
                self.first_ready.set_result(False)

    async def _pause(self, delay: float) -> None:
        if delay > 0 and not self.stopping:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    def _set_online(self, online: bool) -> None:
        if online != self.online:
            self.online = online
            self.counts["online"] += 1 if online else -1

    def _ready(self) -> None:
        """Subscribed (again): count a reconnect, resolve `first_ready` the first time."""
        if self.ever_ready:
            self.counts["reconnects"] += 1
        self.ever_ready = True
        self._set_online(True)
        if not self.first_ready.done():
            self.first_ready.set_result(True)

    def _ended(self, kind: str, code: int | None, after_ms: Any = None) -> Ended:
        """A connection that was established has ended: what next."""
        if self._dropped_for is not None:
            hold, self._dropped_for = self._dropped_for, None
            return Ended("dropped by loadtest", True, True, hold, False)
        reconnect, delay, switch = after_close(code, after_ms, self._failures, self.rng)
        return Ended(kind, True, reconnect, delay, switch)

    def _failed(self, kind: str, status: int | None = None) -> Ended:
        """A connection attempt failed."""
        switch = status in (503, None) or self._failures >= 1
        return Ended(kind, False, status not in (400, 401, 403, 404), backoff(self._failures, self.rng), switch)

    async def stop(self) -> None:
        """Close the connection (normal closure) and end `run()`."""
        self.stopping = True
        self._wake.set()
        await self._close()

    def drop(self, downtime: float) -> bool:
        """A storm: cut the connection now; reconnect (and resume) after `downtime` seconds."""
        if not self.online:
            return False
        self._dropped_for = downtime
        if not self._cut():
            self._dropped_for = None
            return False
        self.counts["storm_drops"] += 1
        return True

    # --- receiving --------------------------------------------------------------------------
    def _message(self, env: dict[str, Any], now_ns: int) -> None:
        """One delivered message envelope (CONTRACT §4)."""
        marker = read_marker(env.get("data"))
        if marker is None:
            self.counts["foreign"] += 1
            return
        channel = env.get("channel")
        verdict = self.log.record(channel, marker.pub, marker.seq, env.get("offset"), env.get("epoch"))  # type: ignore[arg-type]
        if verdict is Verdict.DUPLICATE:
            self.counts["duplicated"] += 1
            return
        if verdict is Verdict.OUT_OF_ORDER:
            self.counts["out_of_order"] += 1
        stats = self.stats
        stats.delivered(now_ns, marker.ts)
        expect = stats.expect
        if self.accounted and expect is not None and expect.expects(channel, marker.pub, marker.seq):  # type: ignore[arg-type]
            stats.remaining -= 1

    # --- transport ---------------------------------------------------------------------------
    async def _session(self) -> Ended:  # pragma: no cover - implemented by the transports
        raise NotImplementedError

    async def _close(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def _cut(self) -> bool:  # pragma: no cover
        raise NotImplementedError

    async def send_chat(self) -> bool:
        """Send one chat message to the peer (WebSocket only); False if not connected."""
        return False

    def abandon_pending(self) -> None:
        """Publishing is over: what was sent but never acknowledged is unconfirmed."""
