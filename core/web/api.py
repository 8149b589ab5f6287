"""The server HTTP API of CONTRACT.md §7 (`Authorization: apikey <key>`) and `POST /notify`.

Served by nodes and routers alike: each builds an ApiContext around its engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from herald import __version__

from ..engine.base import Engine, PublishRequest
from ..protocol.envelope import Position, offset_key, personal_channel, validate_channel, validate_event
from ..protocol.errors import HeraldError, ProtocolError, Unauthorized
from .http import API_KEY_HINT, apikey_matches, json_response, read_json

__all__ = ["ApiContext", "API", "add_api_routes", "publish_one"]


@dataclass
class ApiContext:
    engine: Engine
    api_key: str
    max_body: int
    on_published: Callable[[int], None] = lambda n: None
    describe: Callable[[], dict[str, Any]] = dict  # extra facts for /api/info
    _key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._key = self.api_key.encode()

    def authorized(self, request: web.Request) -> bool:
        return self.key_matches(request.headers.get("Authorization", ""))

    def key_matches(self, authorization: str) -> bool:
        return apikey_matches(authorization, self._key)


API = web.AppKey("herald_api", ApiContext)

_MAX_BROADCAST = 1000
_MAX_HISTORY = 1000


def _context(request: web.Request) -> ApiContext:
    ctx = request.app[API]
    if not ctx.authorized(request):
        raise Unauthorized(API_KEY_HINT)
    return ctx


async def _body(request: web.Request, ctx: ApiContext) -> dict[str, Any]:
    body = await read_json(request, ctx.max_body)
    if not isinstance(body, dict):
        raise ProtocolError("body must be a JSON object")
    return body


def _idempotency_key(body: dict[str, Any]) -> str | None:
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
        raise ProtocolError("'idempotency_key' must be a string of 1-256 characters")
    return key


def _user(body: dict[str, Any], field: str) -> str:
    """A user id from the body, usable in its personal channel's name."""
    user = body.get(field)
    if not isinstance(user, str) or not user:
        raise ProtocolError(f"'{field}' must be a non-empty string")
    validate_channel(personal_channel(user))
    return user


async def publish_one(ctx: ApiContext, body: Any) -> dict[str, Any]:
    """`POST /api/publish` once authorised and its body parsed (also served by core/web/fastpath.py)."""
    if not isinstance(body, dict):
        raise ProtocolError("body must be a JSON object")
    channel = validate_channel(body.get("channel"))
    if "data" not in body:
        raise ProtocolError("'data' is required")
    result = await ctx.engine.publish(
        channel, body["data"], event=validate_event(body), idempotency_key=_idempotency_key(body)
    )
    ctx.on_published(1)
    return result.to_wire()


async def publish(request: web.Request) -> web.Response:
    ctx = _context(request)
    return json_response(await publish_one(ctx, await read_json(request, ctx.max_body)))


async def publish_batch(request: web.Request) -> web.Response:
    """Extension: many publications in one request, one pipeline per shard. Each entry is
    validated and published on its own; the answer lists a result or an error per entry, in order."""
    ctx = _context(request)
    body = await _body(request, ctx)
    messages = body.get("messages")
    if not isinstance(messages, list) or not 0 < len(messages) <= _MAX_BROADCAST:
        raise ProtocolError(f"'messages' must be a list of 1-{_MAX_BROADCAST} publications")
    requests = []
    for m in messages:
        if not isinstance(m, dict) or "data" not in m:
            raise ProtocolError("each message must be an object with 'channel' and 'data'")
        requests.append(
            PublishRequest(validate_channel(m.get("channel")), m["data"], validate_event(m), None, _idempotency_key(m))
        )
    results: list[dict[str, Any]] = []
    for r, res in zip(requests, await ctx.engine.publish_batch(requests), strict=True):
        if isinstance(res, Exception):  # engines return HeraldErrors (EngineUnavailable); anything else is internal
            slug = res.slug if isinstance(res, HeraldError) else "internal"
            results.append({"channel": r.channel, "error": {"code": slug, "message": str(res)}})
        else:
            results.append(res.to_wire())
    ctx.on_published(sum(1 for r in results if "error" not in r))
    return json_response({"results": results})


async def broadcast(request: web.Request) -> web.Response:
    ctx = _context(request)
    body = await _body(request, ctx)
    channels = body.get("channels")
    if not isinstance(channels, list) or not 0 < len(channels) <= _MAX_BROADCAST:
        raise ProtocolError(f"'channels' must be a list of 1-{_MAX_BROADCAST} channel names")
    names = [validate_channel(c) for c in channels]
    if "data" not in body:
        raise ProtocolError("'data' is required")
    event = validate_event(body)
    results = [(await ctx.engine.publish(channel, body["data"], event=event)).to_wire() for channel in names]
    ctx.on_published(len(names))
    return json_response({"results": results})


async def history(request: web.Request) -> web.Response:
    ctx = _context(request)
    channel = validate_channel(request.match_info["channel"])
    q = request.query
    since = None
    if "since" in q:
        if "epoch" not in q:
            raise ProtocolError("'since' needs 'epoch'")
        offset_key(q["since"])
        since = Position(q["since"], q["epoch"])  # type: ignore[arg-type]
    limit = None
    if "limit" in q:
        try:
            limit = int(q["limit"])
        except ValueError:
            raise ProtocolError("'limit' must be an integer") from None
        if limit < 0:
            raise ProtocolError("'limit' must be >= 0")
    limit = _MAX_HISTORY if limit is None else min(limit, _MAX_HISTORY)
    res = await ctx.engine.history(channel, since=since, limit=limit)
    return json_response(
        {
            "channel": channel,
            "epoch": res.epoch,
            "offset": res.offset,
            "recovered": res.recovered,
            "messages": [m.envelope() for m in res.messages],
        }
    )


async def presence(request: web.Request) -> web.Response:
    ctx = _context(request)
    channel = validate_channel(request.match_info["channel"])
    entries = await ctx.engine.presence(channel)
    return json_response({"channel": channel, "clients": [e.to_wire() for e in entries]})


async def presence_stats(request: web.Request) -> web.Response:
    ctx = _context(request)
    channel = validate_channel(request.match_info["channel"])
    entries = await ctx.engine.presence(channel)
    return json_response({"channel": channel, "clients": len(entries), "users": len({e.user for e in entries})})


async def disconnect(request: web.Request) -> web.Response:
    ctx = _context(request)
    body = await _body(request, ctx)
    user = _user(body, "user")
    code = body.get("code", 4003)
    if type(code) is not int or not (code == 1000 or 3000 <= code <= 4999):
        raise ProtocolError("'code' must be 1000 or 3000-4999")
    return json_response({"disconnected": await ctx.engine.disconnect_user(user, code)})


async def info(request: web.Request) -> web.Response:
    ctx = _context(request)
    facts = await ctx.engine.info()
    return json_response({**facts, **ctx.describe(), "version": __version__})


async def notify(request: web.Request) -> web.Response:
    ctx = _context(request)
    body = await _body(request, ctx)
    user = _user(body, "userId")
    if "message" not in body:
        raise ProtocolError("'message' is required")
    await ctx.engine.publish(personal_channel(user), body["message"], event="notification")
    ctx.on_published(1)
    return json_response({"sent": True})


def add_api_routes(app: web.Application) -> None:
    app.router.add_post("/api/publish", publish)
    app.router.add_post("/api/publish/batch", publish_batch)
    app.router.add_post("/api/broadcast", broadcast)
    app.router.add_get("/api/history/{channel:.+}", history)
    app.router.add_get("/api/presence/{channel:.+}/stats", presence_stats)
    app.router.add_get("/api/presence/{channel:.+}", presence)
    app.router.add_post("/api/disconnect", disconnect)
    app.router.add_get("/api/info", info)
    app.router.add_post("/notify", notify)
