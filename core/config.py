"""Configuration: typed frozen objects and one loader for `--x`, `HERALD_X` and `--config FILE`.

Precedence: command line > environment > config file > defaults. Deep modules receive these
objects and never read the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .protocol.errors import ConfigError

__all__ = [
    "JwtConfig",
    "NamespaceOptions",
    "NodeConfig",
    "add_node_options",
    "load_node_config",
    "DEV_SECRET",
    "DEV_API_KEY",
]

DEV_SECRET = "dev-secret"
DEV_API_KEY = "dev-key"
_DASHBOARD_URL = re.compile(r"https?://[^/\s;,'\"]+(/[^\s;,'\"]*)?")


@dataclass(frozen=True, slots=True)
class JwtConfig:
    algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    secret: str | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    audience: str | None = None
    issuer: str | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ("HS256", "RS256", "ES256"):
            raise ConfigError(f"jwt: algorithm must be HS256, RS256 or ES256, not {self.algorithm!r}")

    @property
    def configured(self) -> bool:
        return bool(self.secret if self.algorithm == "HS256" else (self.public_key_file or self.jwks_file))


@dataclass(frozen=True, slots=True)
class NamespaceOptions:
    """Per-namespace channel options (the namespace is the part of a channel before the first ':')."""

    history_size: int = 100  # messages kept per channel
    history_ttl: float = 300.0  # seconds a channel's history is kept after its last publish
    presence: bool = True  # track who is subscribed (who, /api/presence)
    join_leave: bool = False  # send join/leave frames to subscribers
    allow_publish: bool = True  # clients may publish (still needs the token's `publish` claim)

    def __post_init__(self) -> None:
        if not 0 <= self.history_size <= 100_000:
            raise ConfigError("namespace: history_size must be between 0 and 100000")
        if self.history_ttl <= 0:
            raise ConfigError("namespace: history_ttl must be positive")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    meta = {"help": help, **kw}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything an edge node (and `herald dev`) needs. Every field is a CLI option and an env var."""

    host: str = _opt("0.0.0.0", "address to listen on")
    port: int = _opt(8000, "port to listen on")
    node_id: str = _opt("", "node id (default: random)")
    redis: tuple[str, ...] = _opt((), "Redis URL, repeatable: one per shard (none: in-memory engine)")
    partitions: int = _opt(64, "number of partitions channels are hashed onto")
    jwt_secret: str | None = _opt(None, "HS256 secret for client tokens")
    jwt_algorithm: str = _opt("HS256", "HS256, RS256 or ES256")
    jwt_public_key: str | None = _opt(None, "PEM public key file (RS256/ES256)")
    jwks_file: str | None = _opt(None, "JWKS file (RS256/ES256), keys selected by kid")
    jwt_audience: str | None = _opt(None, "required `aud` claim")
    jwt_issuer: str | None = _opt(None, "required `iss` claim")
    api_key: str | None = _opt(None, "key for the server API (Authorization: apikey <key>)")
    drain_window: float = _opt(30.0, "seconds over which a draining node closes its connections")
    max_connections: int = _opt(20_000, "connections per node (over: 1013 / HTTP 503)")
    max_connections_per_user: int = _opt(16, "connections per user (over: 4029)")
    max_connections_per_ip: int = _opt(
        0, "connections per client IP, 0 = no limit (behind a proxy every client has its address)"
    )
    max_subscriptions: int = _opt(256, "channels per connection")
    allowed_origins: tuple[str, ...] = _opt(
        (),
        "browser origins allowed besides the node's own, as scheme://host[:port]: "
        "scheme, host and port must all match ('*': any)",
    )
    history_size: int = _opt(100, "messages of history kept per channel (default namespace)")
    history_ttl: float = _opt(300.0, "seconds of history kept per channel (default namespace)")
    max_message_size: int = _opt(65_536, "largest client frame or API body in bytes (over: 1009 / 413)")
    head_timeout: float = _opt(
        10.0,
        "seconds a connection has to send a complete request head, from its first "
        "byte (the first request: from the connection's opening); a deadline, not "
        "an idle timer",
    )
    keepalive_timeout: float = _opt(
        5.0,
        "seconds an idle keep-alive connection stays open after an answer (and "
        "by which its next request head must be complete)",
    )
    max_pending_heads: int = _opt(
        4096, "connections with a request head in progress per listener (over: HTTP 503 and close)"
    )
    ping_interval: float = _opt(25.0, "seconds between WebSocket pings (dead after two missed)")
    idle_timeout: float = _opt(3600.0, "close (4000) after this many seconds with no message either way; 0 = never")
    auth_timeout: float = _opt(5.0, "seconds a connection may wait before sending its auth message")
    client_rate: float = _opt(50.0, "client messages per second per connection (token bucket rate)")
    client_burst: int = _opt(100, "client messages burst per connection (token bucket size)")
    send_buffer: int = _opt(1_048_576, "bytes queued to one connection before it is a slow consumer (4008)")
    sse_heartbeat: float = _opt(15.0, "seconds between SSE comment heartbeats")
    sse_retry_ms: int = _opt(2000, "the `retry:` an SSE stream starts with")
    sse_max_channels: int = _opt(16, "channels per SSE stream")
    namespaces: dict[str, Any] = _opt({}, "per-namespace options (config file): {ns: {history_size, ...}}")
    lease_seconds: float = _opt(
        5.0, "router: partition lease; a dead router's partitions move after it (control: the leader lease)"
    )
    member_timeout: float = _opt(6.0, "control: seconds without a heartbeat before a member is dead and cleaned up")
    dead_retention: float = _opt(60.0, "control: seconds a dead member stays listed after its cleanup")
    auto_rebalance: bool = _opt(True, "control: rebalance connections on its own (else only on POST /admin/rebalance)")
    rebalance_ratio: float = _opt(
        0.2, "control: rebalance while the busiest node is more than this far above the mean (0.2: 20 percent)"
    )
    rebalance_interval: float = _opt(5.0, "control: seconds between rebalancing rounds")
    rebalance_max: int = _opt(250, "control: connections one node sheds per round at most")
    rebalance_min_mean: float = _opt(10.0, "control: leave clusters with fewer connections per node than this alone")
    dashboard_url: str | None = _opt(
        None,
        "control: the Herald URL (http/https) the ops dashboard connects to for its "
        "live feed; the nodes' --allowed-origins must admit the dashboard's own "
        "origin (default: the page's own origin under herald dev)",
    )
    log_level: str = _opt("info", "debug, info, warning or error")
    log_format: str = _opt("json", "json or console")
    dev: bool = field(default=False, metadata={"help": "development mode", "cli": False})

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536 and self.port != 0:
            raise ConfigError("node: --port must be 0-65535")
        if self.partitions < 1:
            raise ConfigError("node: --partitions must be at least 1")
        if self.max_connections_per_ip < 0:
            raise ConfigError("node: --max-connections-per-ip must be >= 0 (0: no limit)")
        for name in (
            "max_connections",
            "max_connections_per_user",
            "max_subscriptions",
            "max_message_size",
            "send_buffer",
            "client_burst",
            "sse_max_channels",
            "max_pending_heads",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"node: --{name.replace('_', '-')} must be at least 1")
        if not (
            self.member_timeout > 0
            and self.dead_retention >= 0
            and self.rebalance_ratio > 0
            and self.rebalance_interval > 0
            and self.rebalance_max >= 1
            and self.rebalance_min_mean >= 0
        ):
            raise ConfigError(
                "control: --member-timeout, --rebalance-ratio, --rebalance-interval must be > 0, "
                "--rebalance-max >= 1, --dead-retention and --rebalance-min-mean >= 0"
            )
        if self.drain_window < 0 or self.ping_interval <= 0 or self.client_rate <= 0:
            raise ConfigError("node: --drain-window must be >= 0, --ping-interval and --client-rate > 0")
        if not (self.head_timeout > 0 and self.keepalive_timeout > 0):
            raise ConfigError("node: --head-timeout and --keepalive-timeout must be > 0")
        if self.dashboard_url and not _DASHBOARD_URL.fullmatch(self.dashboard_url):
            raise ConfigError("control: --dashboard-url must be an http:// or https:// URL")
        if self.log_format not in ("json", "console"):
            raise ConfigError("node: --log-format must be json or console")
        _ = self.jwt  # validates the algorithm
        try:
            NamespaceOptions(self.history_size, self.history_ttl)
        except ConfigError as exc:
            raise ConfigError(f"node: {exc}") from None
        for ns, opts in self.namespaces.items():
            if not isinstance(opts, dict):
                raise ConfigError(f"node: namespaces.{ns} must be a table")
            try:
                NamespaceOptions(**opts)
            except TypeError as exc:
                raise ConfigError(f"node: namespaces.{ns}: {exc}") from None
        if not self.dev:
            if not self.jwt.configured:
                raise ConfigError(
                    "node: no JWT key configured: set --jwt-secret (HS256) or --jwt-public-key / --jwks-file"
                )
            if not self.api_key:
                raise ConfigError("node: no API key configured: set --api-key (or HERALD_API_KEY)")

    @property
    def jwt(self) -> JwtConfig:
        return JwtConfig(
            self.jwt_algorithm,  # type: ignore[arg-type]  # checked by JwtConfig.__post_init__
            self.jwt_secret,
            self.jwt_public_key,
            self.jwks_file,
            self.jwt_audience,
            self.jwt_issuer,
        )

    def namespace(self, ns: str) -> NamespaceOptions:
        base = {"history_size": self.history_size, "history_ttl": self.history_ttl}
        return NamespaceOptions(**{**base, **self.namespaces.get(ns, {})})

    def namespace_resolver(self) -> Callable[[str], NamespaceOptions]:
        """`namespace()` memoised: resolved once per namespace, for hot paths."""
        return functools.lru_cache(maxsize=4096)(self.namespace)

    def effective_node_id(self) -> str:
        return self.node_id or f"node-{secrets.token_hex(4)}"


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """Add one `--x-y` option per NodeConfig field (all default to None: unset)."""
    parser.add_argument("--config", help="TOML or JSON config file (keys as option names)")
    for f in _FIELDS.values():
        if not f.metadata.get("cli", True) or f.name == "namespaces":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "jwt_public_key":
            flag = "--jwt-public-key"
        if f.type in ("tuple[str, ...]",):
            parser.add_argument(flag, action="append", default=None, help=f.metadata["help"], metavar="VALUE")
        else:
            parser.add_argument(flag, default=None, help=f.metadata["help"])


def _coerce(name: str, value: Any) -> Any:
    f = _FIELDS[name]
    typ = str(f.type)
    try:
        if typ == "tuple[str, ...]":
            if isinstance(value, str):
                value = [value]
            items: list[str] = []
            for v in value:
                items.extend(p.strip() for p in str(v).split(",") if p.strip())
            return tuple(items)
        if typ == "int":
            return int(value)
        if typ == "float":
            return float(value)
        if typ == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if typ == "dict[str, Any]":
            return dict(json.loads(value) if isinstance(value, str) else value)
        return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"node: invalid value for --{name.replace('_', '-')}: {value!r}") from exc


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = tomllib.loads(raw.decode()) if not path.endswith(".json") else json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config: cannot read {path}: {exc}") from exc
    return {k.replace("-", "_"): v for k, v in data.items()}


def load_node_config(
    args: argparse.Namespace | Mapping[str, Any],
    env: Mapping[str, str] = os.environ,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Merge defaults < config file < HERALD_* environment < command line into a NodeConfig."""
    cli = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    values: dict[str, Any] = dict(defaults or {})
    config_file = cli.pop("config", None) or env.get("HERALD_CONFIG")
    if config_file:
        for k, v in _read_file(config_file).items():
            if k not in _FIELDS:
                raise ConfigError(f"config: unknown option {k!r} in {config_file}")
            values[k] = _coerce(k, v)
    for name in _FIELDS:
        env_value = env.get("HERALD_" + name.upper())
        if env_value is not None and name != "dev":
            values[name] = _coerce(name, env_value)
    for name, value in cli.items():
        if name in _FIELDS and value is not None:
            values[name] = _coerce(name, value)
    return NodeConfig(**values)
