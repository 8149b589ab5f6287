"""Herald's exception tree. One root; client-facing errors carry their wire code."""

from __future__ import annotations

__all__ = [
    "HeraldError",
    "ProtocolError",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "PayloadTooBig",
    "RateLimited",
    "EngineUnavailable",
    "ConfigError",
    "InvalidState",
]


class HeraldError(Exception):
    """Root of every error Herald raises on purpose."""

    code: int = 500
    slug: str = "internal"


class ProtocolError(HeraldError):
    """Malformed input: bad JSON, unknown type, bad channel name, missing field (400)."""

    code = 400
    slug = "bad_request"


class Unauthorized(HeraldError):
    """Missing, invalid or expired credentials (401 / close 4001)."""

    code = 401
    slug = "unauthorized"


class Forbidden(HeraldError):
    """Authenticated but not permitted (403)."""

    code = 403
    slug = "forbidden"


class NotFound(HeraldError):
    code = 404
    slug = "not_found"


class Conflict(HeraldError):
    """The request cannot apply to the target's current state (409): e.g. draining a dead node."""

    code = 409
    slug = "conflict"


class PayloadTooBig(HeraldError):
    """Over the configured size limit (413 / close 1009)."""

    code = 413
    slug = "payload_too_big"


class RateLimited(HeraldError):
    """The connection's token bucket is empty (429)."""

    code = 429
    slug = "rate_limited"


class EngineUnavailable(HeraldError):
    """The engine (Redis) cannot be reached; nothing was half-done (503 / close 1011)."""

    code = 503
    slug = "engine_unavailable"


class ConfigError(HeraldError):
    """Invalid configuration; the message is prefixed with the component."""

    code = 500
    slug = "config"


class InvalidState(HeraldError, AssertionError):
    """A programming error: an operation in a state that does not allow it."""
