"""HTTP helpers shared by the node's endpoints: the contract's JSON error body, bounded JSON bodies."""

from __future__ import annotations

import functools
import hmac
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from herald.core.protocol.errors import HeraldError, PayloadTooBig, ProtocolError

__all__ = [
    "json_error",
    "json_response",
    "read_json",
    "error_middleware",
    "apikey_matches",
    "API_KEY_HINT",
    "error_body",
    "http_response",
    "http_error",
]

#: The message of every 401 for the server and admin APIs.
API_KEY_HINT = "missing or wrong API key (Authorization: apikey <key>)"


def apikey_matches(authorization: str, key: bytes) -> bool:
    """`Authorization: apikey <key>` with the configured key (constant-time; never with no key)."""
    scheme, _, given = authorization.partition(" ")
    return (
        scheme.lower() == "apikey"
        and bool(key)
        and hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), key)
    )


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def error_body(slug: str, message: str) -> bytes:
    """The contract's error body: {"error":{"code","message"}}."""
    return orjson.dumps({"error": {"code": slug, "message": message}})


def json_error(status: int, slug: str, message: str) -> web.Response:
    return web.Response(body=error_body(slug, message), status=status, content_type="application/json")


_date: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """The `Date` header's value, formatted at most once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    return _date[1]


@functools.cache
def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def http_response(status: int, body: bytes, *, keep_alive: bool = True, headers: dict[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with a JSON body, as bytes (for the protocols that write
    their answers themselves: node/edge.py, core/web/fastpath.py)."""
    extra = b"" if keep_alive else b"Connection: close\r\n"
    if headers:
        extra += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
    return b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %b\r\n%b\r\n%b" % (
        status,
        _phrase(status),
        len(body),
        _date_header(),
        extra,
        body,
    )


def http_error(status: int, slug: str, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A complete `Connection: close` error response with the contract's body."""
    return http_response(
        status,
        error_body(slug, message),
        keep_alive=False,
        headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
    )


async def read_json(request: web.Request, limit: int) -> Any:
    """The request body as JSON, refusing more than `limit` bytes (413) and bad JSON (400).
    The app's `client_max_size` is the same limit, so aiohttp refuses oversized bodies (also
    chunked ones) while reading."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooBig(f"body over {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooBig(f"body over {limit} bytes") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("body is not valid JSON") from exc


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as {"error":{"code","message"}} with the matching status."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except HeraldError as exc:
        return json_error(exc.code, exc.slug, str(exc) or exc.slug)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_big"}.get(exc.status, "http_error")
        return json_error(exc.status, slug, exc.reason)
