"""The WebSocket opening handshake (RFC 6455 §4.2), sans-I/O: request head in, response bytes out.

`parse_head(data)` parses an HTTP/1.1 request head with httptools (llhttp, the parser of
Node.js and uvicorn); `upgrade_error(head)` says what is wrong with it as a WebSocket upgrade;
`accept(head, subprotocol)` builds the `101 Switching Protocols` answer. `head_end(data)` finds
where a head ends (also a malformed one, so that it can be refused at once), and
`origin_allowed()` compares a browser's `Origin` by scheme, host and port.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import httptools

__all__ = [
    "Head",
    "HeadError",
    "parse_head",
    "head_end",
    "upgrade_error",
    "choose_subprotocol",
    "accept",
    "origin_allowed",
    "MAX_HEAD",
]

MAX_HEAD = 16384  # bytes of request line and headers (aiohttp's limit is 8190 per line)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_BLANK_LINE = re.compile(rb"\n\r?\n")  # the end of a head, with CRLF or (malformed) bare LF line ends
_BARE_LF = re.compile(rb"(?<!\r)\n")


class HeadError(Exception):
    """An unparseable or oversized request head."""


@dataclass(slots=True)
class Head:
    method: str
    path: str
    query_string: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeats joined by ", "
    upgrade: bool = False  # llhttp saw `Connection: upgrade` with an `Upgrade` header
    body_start: int = 0  # offset of the bytes after the head in the data parsed

    def query(self, name: str) -> str | None:
        for key, value in parse_qsl(self.query_string, keep_blank_values=True):
            if key == name:
                return value
        return None

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value.strip('"')
        return None


def head_end(data: bytes | bytearray, start: int = 0) -> int:
    """The offset just after the head at `data[start:]` (its first empty line, CRLF or bare LF),
    or -1 while it is incomplete. Only whether a head is complete: `parse_head` judges it."""
    m = _BLANK_LINE.search(data, start)
    return -1 if m is None else m.end()


class _Collector:
    __slots__ = ("url", "headers", "complete", "hosts")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.complete = False
        self.hosts = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key == "host":
            self.hosts += 1
        text = value.decode("utf-8", "surrogateescape")  # as aiohttp decodes header values
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_head(data: bytes | bytearray, start: int = 0) -> Head | None:
    """The request head at `data[start:]` (only the first one, if several are pipelined), or
    None if it is not complete yet. `body_start` is relative to `start`; nothing is copied but
    the head itself. HeadError for what every HTTP server must answer with 400: a malformed or
    oversized head, bare LF line ends, no `Host` in HTTP/1.1 or more than one (RFC 9112 §2.2, §3.2)."""
    end = data.find(b"\r\n\r\n", start, start + MAX_HEAD)  # a head must end within MAX_HEAD
    if end < 0:
        limit = start + MAX_HEAD
        if data.find(b"\n\n", start, limit) >= 0 or data.find(b"\n\r\n", start, limit) >= 0:
            raise HeadError("bare LF line ends")  # (bytes.find, not a regex: heads trickle in, this runs per read)
        if len(data) - start >= MAX_HEAD:
            raise HeadError("request head too large")
        return None
    if _BARE_LF.search(data, start, end):
        raise HeadError("bare LF line ends")
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    upgrade = False
    try:
        parser.feed_data(data[start : end + 4])
    except httptools.HttpParserUpgrade:
        upgrade = True
    except httptools.HttpParserError as exc:
        raise HeadError(str(exc) or "malformed request") from None
    if not collector.complete:
        raise HeadError("malformed request head")
    if collector.hosts > 1 or (collector.hosts == 0 and parser.get_http_version() != "1.0"):
        raise HeadError("a request needs exactly one Host header")
    try:
        url = httptools.parse_url(collector.url)
    except httptools.HttpParserInvalidURLError:
        raise HeadError("malformed request target") from None
    return Head(
        parser.get_method().decode(),
        (url.path or b"/").decode("latin-1"),
        (url.query or b"").decode("latin-1"),
        parser.get_http_version(),
        collector.headers,
        upgrade,
        end + 4 - start,
    )


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")}


def upgrade_error(head: Head) -> tuple[int, str] | None:
    """Why `head` is not a valid WebSocket upgrade, as (status, message); None when it is."""
    h = head.headers
    if head.method != "GET":
        return 405, "WebSocket upgrades use GET"
    if head.version != "1.1":
        return 400, "WebSocket upgrades need HTTP/1.1"
    if "websocket" not in _tokens(h.get("upgrade", "")) or "upgrade" not in _tokens(h.get("connection", "")):
        return 400, "expected a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)"
    if h.get("sec-websocket-version", "").strip() != "13":
        return 426, "unsupported WebSocket version: 13 is supported"
    try:
        if len(base64.b64decode(h.get("sec-websocket-key", "").strip(), validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        return 400, "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def choose_subprotocol(head: Head, supported: tuple[str, ...]) -> str | None:
    """The first subprotocol the client offers that the server speaks."""
    for offered in head.headers.get("sec-websocket-protocol", "").split(","):
        if offered.strip() in supported:
            return offered.strip()
    return None


def accept(head: Head, subprotocol: str | None) -> bytes:
    """The 101 answer to a valid upgrade (`upgrade_error(head)` is None)."""
    key = head.headers["sec-websocket-key"].strip().encode()
    digest = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + digest,
    ]
    if subprotocol is not None:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def origin_allowed(origin: str | None, host: str, allowed: tuple[str, ...], forwarded_proto: str | None = None) -> bool:
    """Whether a browser's `Origin` may connect: it is in `allowed` (`scheme://host[:port]`, or
    `*`), or it is the node's own origin: the request's `Host` with the scheme the client used
    (`X-Forwarded-Proto` from a TLS-terminating proxy, else `http`: a node serves plain HTTP).
    Scheme, host and port are compared; a default port may be left out. No Origin: not a browser."""
    if origin is None:
        return True
    if "*" in allowed:
        return True
    scheme, sep, netloc = origin.strip().partition("://")
    key = _origin_key(scheme.lower(), netloc) if sep and "/" not in netloc else None
    if key is None:
        return False
    for entry in allowed:
        e_scheme, e_sep, e_netloc = entry.strip().rstrip("/").partition("://")
        if e_sep and _origin_key(e_scheme.lower(), e_netloc) == key:
            return True
    proto = (forwarded_proto or "http").split(",")[0].strip().lower()
    own = {"http": "http", "ws": "http", "https": "https", "wss": "https"}.get(proto)
    return own is not None and _origin_key(own, host.strip()) == key
