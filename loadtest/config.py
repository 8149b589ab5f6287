"""`LoadConfig`: one frozen object describing a load run; the CLI builds it, workers receive it."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from herald.core.config import DEV_API_KEY, DEV_SECRET

__all__ = ["LoadConfig", "Scenario", "Transport", "SCENARIOS", "ConfigError", "normalize_target"]

Scenario = Literal["fanout", "direct", "chat", "reconnect-storm", "drain"]
Transport = Literal["ws", "sse"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)


class ConfigError(ValueError):
    """An unusable combination of options (exit code 2)."""


def normalize_target(url: str) -> str:
    """A node's base URL: `http://host:port` from `host:port`, `ws://host:port/ws` or `http://host:port/`."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ConfigError(f"not a node URL: {url!r}")
    path = parts.path.rstrip("/")
    for suffix in ("/ws", "/events", "/metrics"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True, slots=True)
class LoadConfig:
    scenario: Scenario = "fanout"
    transport: Transport = "ws"
    #: base URLs of the target nodes; client i connects to targets[i % len(targets)] first
    targets: tuple[str, ...] = ("http://127.0.0.1:8000",)
    #: base URL for the server API (publish, notify, disconnect); default: the first target (drain:
    #: the first target not drained)
    api_url: str = ""
    api_key: str = DEV_API_KEY
    jwt_secret: str = DEV_SECRET
    connections: int = 100
    rate: float = 10.0  # publications per second, all workers together
    duration: float = 10.0  # seconds of publishing
    payload_size: int = 100  # bytes of JSON `data` per message (about)
    ramp_up: float = 0.0  # seconds over which the connections are opened
    workers: int = 1  # processes sharing the connections and the publishing
    codec: Literal["json", "msgpack"] = "json"  # WebSocket subprotocol herald.<codec>
    channel: str = ""  # the fan-out channel (fanout, reconnect-storm, drain); default loadtest:<run-id>
    direct_via: Literal["publish", "notify"] = "publish"
    batch: int = 1  # publications per request (>1: POST /api/publish/batch)
    publish_concurrency: int = 32  # publish requests in flight per worker
    storms: int = 1  # reconnect-storm: how many storms, evenly spaced over the duration
    storm_size: int = 0  # clients dropped per storm; 0 = all
    storm_downtime: float = 0.0  # seconds the dropped clients stay away
    storm_via: Literal["client", "api"] = "client"  # drop the sockets, or POST /api/disconnect code 4008
    storm_traffic: Literal["fanout", "direct"] = "fanout"  # what reconnect-storm publishes meanwhile
    drain_pids: tuple[int, ...] = ()  # drain: SIGTERM these (one per target, in order) instead of the API
    drain_count: int = 0  # drain: how many targets to drain; 0 = all but the last (or every PID given)
    settle: float = 2.0  # after publishing: stop waiting once nothing arrived for this long
    grace: float = 15.0  # after publishing: wait at most this long for missing messages
    connect_timeout: float = 10.0
    connect_concurrency: int = 64  # connection attempts in flight per worker
    max_reconnects: int = 50  # per client, over the whole run
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    metrics_urls: tuple[str, ...] = ()  # default: each target's /metrics
    seed: int = 1

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}")
        if self.transport not in ("ws", "sse"):
            raise ConfigError("--transport must be ws or sse")
        if not self.targets:
            raise ConfigError("at least one --url is required")
        object.__setattr__(self, "targets", tuple(normalize_target(t) for t in self.targets))
        object.__setattr__(self, "api_url", normalize_target(self.api_url or self._default_api_target()))
        if not self.metrics_urls:
            object.__setattr__(self, "metrics_urls", tuple(t + "/metrics" for t in self.targets))
        if not self.channel:
            object.__setattr__(self, "channel", f"loadtest:{self.run_id}")
        checks = [
            (self.connections >= 1, "--connections must be at least 1"),
            (self.rate > 0, "--rate must be positive"),
            (0 < self.duration <= 86_400, "--duration must be between 0 and 86400 seconds"),
            (0 <= self.payload_size <= 1_000_000, "--payload-size must be 0-1000000 bytes"),
            (self.ramp_up >= 0, "--ramp-up must be >= 0"),
            (1 <= self.workers <= 64, "--workers must be 1-64"),
            (self.workers <= self.connections, "--workers cannot exceed --connections"),
            (1 <= self.batch <= 1000, "--batch must be 1-1000"),
            (self.publish_concurrency >= 1 and self.connect_concurrency >= 1, "concurrency must be at least 1"),
            (self.storms >= 1 and self.storm_size >= 0 and self.storm_downtime >= 0, "bad storm options"),
            (self.settle > 0 and self.grace >= self.settle, "--settle must be > 0 and <= --grace"),
            (self.connect_timeout > 0 and self.max_reconnects >= 0, "bad connect options"),
            (self.codec in ("json", "msgpack"), "--codec must be json or msgpack"),
            (self.storm_traffic in ("fanout", "direct"), "--storm-traffic must be fanout or direct"),
            (
                not (self.batch > 1 and self.pattern == "direct" and self.direct_via == "notify"),
                "--batch cannot be used with --direct-via notify",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.scenario == "drain":
            if len(self.targets) < 2:
                raise ConfigError("drain needs at least two --url targets: clients move to the ones not drained")
            if len(self.drain_pids) > len(self.targets):
                raise ConfigError("more --drain-pid than --url targets")
            if self.drain_count > len(self.targets):
                raise ConfigError("--drain-count exceeds the number of targets")

    @property
    def pattern(self) -> Literal["fanout", "direct", "chat"]:
        """The traffic: one shared channel (fanout, drain, reconnect-storm by default), personal
        channels published to through the API (direct), or clients sending to each other (chat)."""
        if self.scenario == "reconnect-storm":
            return self.storm_traffic
        if self.scenario in ("direct", "chat"):
            return self.scenario
        return "fanout"

    @property
    def fanout_like(self) -> bool:
        return self.pattern == "fanout"

    def _default_api_target(self) -> str:
        """The first target, or for drain the first one that is not drained (a node stopped by
        SIGTERM cannot take publications any more)."""
        spared = [t for t in self.targets if t not in self.drain_targets]
        return spared[0] if spared else self.targets[-1]

    @property
    def drain_targets(self) -> tuple[str, ...]:
        if self.scenario != "drain":
            return ()
        if self.drain_count:
            n = self.drain_count
        elif self.drain_pids:
            n = len(self.drain_pids)
        else:
            n = len(self.targets) - 1
        return self.targets[:n]

    def to_dict(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out.pop("api_key")
        out.pop("jwt_secret")
        return out
