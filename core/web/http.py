"""HTTP helpers shared by the node's endpoints: the contract's JSON error body, bounded JSON bodies."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from herald.core.protocol.errors import HeraldError, PayloadTooBig, ProtocolError

__all__ = ["json_error", "json_response", "read_json", "error_middleware", "apikey_matches", "API_KEY_HINT"]

#: The message of every 401 for the server and admin APIs.
API_KEY_HINT = "missing or wrong API key (Authorization: apikey <key>)"


def apikey_matches(authorization: str, key: bytes) -> bool:
    """`Authorization: apikey <key>` with the configured key (constant-time; never with no key)."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "apikey" and bool(key) and hmac.compare_digest(given.strip().encode(), key)


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def json_error(status: int, slug: str, message: str) -> web.Response:
    return json_response({"error": {"code": slug, "message": message}}, status)


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
        return await handler(request)
    except HeraldError as exc:
        return json_error(exc.code, exc.slug, str(exc) or exc.slug)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_big"}.get(exc.status, "http_error")
        return json_error(exc.status, slug, exc.reason)
