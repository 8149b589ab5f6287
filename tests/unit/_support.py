"""Shared helpers for the unit tests: a fixed clock, real tokens, sessions and publications."""

from __future__ import annotations

from typing import Any

import jwt
import msgpack
import orjson

from herald.core.auth import Authenticator, Principal
from herald.core.config import JwtConfig
from herald.core.engine.base import HistoryResult
from herald.core.protocol.codec import JSON, Codec
from herald.core.protocol.envelope import ChannelName, Epoch, Offset, Publication
from herald.core.protocol.session import Session, SessionLimits

SECRET = "k" * 32
NOW = 1_700_000_000.0
AUTH = Authenticator(JwtConfig(secret=SECRET))

#: Every `type` a server may send to a WebSocket client (CONTRACT §4-5).
REPLY_TYPES = frozenset(
    {
        "connected",
        "subscribed",
        "unsubscribed",
        "published",
        "sent",
        "user_status",
        "who",
        "history",
        "refreshed",
        "pong",
        "message",
        "reconnect",
        "error",
    }
)
#: Error codes that keep a connection open (CONTRACT §5).
OPEN_ERROR_CODES = frozenset({400, 403, 413, 429})


def make_token(
    sub: str = "alice",
    *,
    exp: float | None = None,
    channels: list[str] | None = None,
    publish: list[str] | None = None,
    secret: str = SECRET,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"sub": sub, "exp": int(NOW + 3600) if exp is None else exp}
    payload["channels"] = ["room:*"] if channels is None else channels
    payload["publish"] = ["room:*"] if publish is None else publish
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def make_principal(sub: str = "alice", **kw: Any) -> Principal:
    return AUTH.verify(make_token(sub, **kw), NOW)


def make_session(
    limits: SessionLimits | None = None,
    *,
    principal: Principal | bool | None = True,
    codec: Codec = JSON,
    now: float = NOW,
    user: str = "alice",
) -> Session:
    """A session; OPEN for `user` by default, AUTHENTICATING with principal=None."""
    p = make_principal(user) if principal is True else principal
    return Session("c1", "n1", codec, limits or SessionLimits(), AUTH.verify, now, principal=p or None)


def decode_frame(frame: bytes) -> Any:
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        return msgpack.unpackb(frame, raw=False)


def drain(session: Session) -> list[dict[str, Any]]:
    """The decoded frames queued by `session` since the last drain."""
    return [decode_frame(f) for f in session.frames_to_send()]


def send(session: Session, obj: Any, now: float = NOW) -> Any:
    """Feed one client message (a dict, JSON-encoded) to the session."""
    return session.receive(orjson.dumps(obj).decode(), now)


def pub(
    channel: str,
    seq: int,
    *,
    epoch: str = "e1",
    ms: int = 1_700_000_000_000,
    data: Any = None,
    sender: str | None = None,
    event: str = "message",
) -> Publication:
    """A publication of `channel` at offset `<ms>-<seq>`."""
    return Publication(
        ChannelName(channel),
        Offset(f"{ms}-{seq}"),
        Epoch(epoch),
        {"n": seq} if data is None else data,
        event,
        sender,
        ms,
    )


def history(
    channel: str,
    *,
    epoch: str = "e1",
    offset: str = "0-0",
    recovered: bool = False,
    messages: list[Publication] | None = None,
) -> HistoryResult:
    return HistoryResult(ChannelName(channel), Epoch(epoch), Offset(offset), recovered, messages or [])
