"""The client's settings (one frozen object) and its URL handling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from herald.core.protocol.errors import ConfigError

from .backoff import BackoffPolicy

__all__ = ["ClientConfig", "Endpoint"]


@dataclass(frozen=True, slots=True)
class ClientConfig:
    #: "auto": WebSocket, falling back to SSE when the upgrade is refused (a proxy that strips it);
    #: "ws" or "sse": that transport only.
    transport: Literal["auto", "ws", "sse"] = "auto"
    #: WebSocket subprotocol: herald.json (text frames) or herald.msgpack (binary frames).
    codec: Literal["json", "msgpack"] = "json"
    #: Reconnect delays (full jitter, 0.5 s → 20 s by default).
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    #: Seconds for a connection to open (TCP, TLS, upgrade, `connected` frame / stream headers).
    connect_timeout: float = 10.0
    #: Seconds a request waits for a connection to send on, and then for its reply.
    request_timeout: float = 10.0
    #: Largest frame the client sends, in bytes (the server's limit: over it, it closes with 1009).
    max_message_size: int = 65_536
    #: Refresh the token this many seconds before it expires (at most a fifth of its life).
    refresh_margin: float = 30.0
    #: SSE: seconds without a byte before the stream is taken for dead (heartbeats come every 15 s).
    sse_read_timeout: float = 45.0

    def __post_init__(self) -> None:
        if self.transport not in ("auto", "ws", "sse"):
            raise ConfigError("client: transport must be 'auto', 'ws' or 'sse'")
        if self.codec not in ("json", "msgpack"):
            raise ConfigError("client: codec must be 'json' or 'msgpack'")
        if min(self.connect_timeout, self.request_timeout, self.sse_read_timeout) <= 0:
            raise ConfigError("client: timeouts must be positive")
        if self.max_message_size <= 0 or self.refresh_margin < 0:
            raise ConfigError("client: max_message_size must be positive and refresh_margin >= 0")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One node, from a URL given as http(s)://host[:port][/prefix], or with /ws, /events or ws(s)://."""

    base: str  # http(s)://host:port/prefix, no trailing slash

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise ConfigError(f"client: not an http(s) or ws(s) URL: {url!r}")
        path = parts.path.rstrip("/")
        for suffix in ("/ws", "/events"):
            if path.endswith(suffix):
                path = path[: -len(suffix)]
        return cls(urlunsplit((scheme, parts.netloc, path, "", "")))

    @property
    def ws(self) -> str:
        return "ws" + self.base[len("http") :] + "/ws"

    @property
    def events(self) -> str:
        return self.base + "/events"
