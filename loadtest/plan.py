"""What each scenario means concretely: users, channels, tokens, and where publications go.

Client `i` (0 <= i < connections) is user `lt<run-id>-<i>`; worker `w` runs the clients with
`i % workers == w`. The fan-out scenarios (fanout, reconnect-storm, drain) subscribe everyone to
one channel that every worker's HTTP publisher publishes to. `direct` sends each publication to
one user's personal channel, round-robin over all users. `chat` has client i send to client
i+1 (mod N): over its own WebSocket (`chat` command), or — SSE clients cannot send — through the
server API on its behalf, as event `chat` on the peer's personal channel.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import jwt

from .config import LoadConfig

__all__ = ["Plan", "Destination"]


class Destination(NamedTuple):
    """One publication of an HTTP publisher: where it goes and in whose name."""

    channel: str
    pub: str  # the stream's publisher id
    event: str | None  # None: the default `message`
    user: str | None  # direct via /notify: the user id; chat: the recipient


class Plan:
    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.n = cfg.connections

    def user(self, i: int) -> str:
        return f"lt{self.cfg.run_id}-{i}"

    def personal(self, i: int) -> str:
        return f"user:{self.user(i)}"

    def local_clients(self, worker: int) -> list[int]:
        return list(range(worker, self.n, self.cfg.workers))

    def channels(self, i: int) -> tuple[str, ...]:
        """The channels whose messages client i must receive (what it is accounted against)."""
        if self.cfg.fanout_like:
            return (self.cfg.channel,)
        return (self.personal(i),)

    def subscriptions(self, i: int) -> tuple[str, ...]:
        """Channels client i subscribes to. A WebSocket client also subscribes to its personal
        channel (it already is) to learn that channel's position, so it can resume it."""
        if self.cfg.fanout_like:
            return (self.cfg.channel,)
        return (self.personal(i),) if self.cfg.transport == "ws" else ()

    def token(self, i: int) -> str:
        cfg = self.cfg
        ttl = cfg.ramp_up + cfg.connect_timeout + cfg.duration + cfg.grace + 3600
        claims = {
            "sub": self.user(i),
            "exp": int(time.time() + ttl),
            "iat": int(time.time()),
            "channels": [cfg.channel] if cfg.fanout_like else [],
            "publish": [],
        }
        with warnings.catch_warnings():  # a short development secret is the user's choice
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            return jwt.encode(claims, cfg.jwt_secret, algorithm="HS256")

    def peer(self, i: int) -> int:
        return (i + 1) % self.n

    @property
    def http_publishing(self) -> bool:
        """Whether workers publish over the server API (all but chat over WebSocket)."""
        return not (self.cfg.pattern == "chat" and self.cfg.transport == "ws")

    def destinations(self, worker: int) -> Iterator[Destination]:
        """The endless sequence of this worker's publications (the caller bounds it)."""
        cfg, n, workers = self.cfg, self.n, self.cfg.workers
        pub = f"w{worker}"
        if cfg.fanout_like:
            dest = Destination(cfg.channel, pub, None, None)
            while True:
                yield dest
        elif cfg.pattern == "direct":
            k = 0
            while True:
                j = (k * workers + worker) % n
                k += 1
                yield Destination(
                    self.personal(j), pub, "notification" if cfg.direct_via == "notify" else None, self.user(j)
                )
        else:  # chat over SSE: the local clients take turns sending to their peer
            local = self.local_clients(worker)
            k = 0
            while True:
                i = local[k % len(local)]
                k += 1
                yield Destination(self.personal(self.peer(i)), self.user(i), "chat", self.user(self.peer(i)))
