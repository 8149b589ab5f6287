"""The client's exceptions: one root under Herald's `HeraldError`, wire codes carried as data.

* :class:`ServerError` and its subclasses are `error` replies (CONTRACT §5) or HTTP errors of the
  SSE endpoint: the connection stays usable. Build one from a wire code with :func:`error_for`.
* :class:`ClientClosed` ends the client: a final close code (1000, 4003), an unrecoverable 4001
  (:class:`Unauthorized`), or `close()` called by the application.
* :class:`ConnectionLost` fails a request that was sent but not answered before the connection
  dropped (whether the server ran it is unknown, so it is not re-sent).
"""

from __future__ import annotations

from herald.core.protocol.errors import HeraldError

__all__ = [
    "HeraldClientError",
    "ServerError",
    "BadRequest",
    "Forbidden",
    "PayloadTooBig",
    "RateLimited",
    "Unavailable",
    "error_for",
    "ConnectionLost",
    "ClientClosed",
    "Unauthorized",
    "MessageTooBig",
    "NotSupported",
    "RequestTimeout",
]


class HeraldClientError(HeraldError):
    """Root of every error `herald.client` raises."""

    code: int = 0

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class ServerError(HeraldClientError):
    """The server refused a request; `code` is the contract's error code (400, 403, 413, 429, 503)."""


class BadRequest(ServerError):
    """400: malformed request, unknown type, bad channel name."""

    code = 400


class Forbidden(ServerError):
    """403: not permitted (subscribe, publish, read) — the connection stays open."""

    code = 403


class PayloadTooBig(ServerError):
    """413: a reply would be too large, or (raised locally) a frame over the size limit."""

    code = 413


class RateLimited(ServerError):
    """429: the connection's message rate is over the limit."""

    code = 429


class Unavailable(ServerError):
    """503 (or any other code): the engine is unavailable; try again."""

    code = 503


_BY_CODE: dict[int, type[ServerError]] = {
    400: BadRequest,
    403: Forbidden,
    413: PayloadTooBig,
    429: RateLimited,
    503: Unavailable,
}


def error_for(code: int, message: str) -> ServerError:
    """The typed exception for an error reply with `code`."""
    return _BY_CODE.get(code, ServerError)(message, code)


class ConnectionLost(HeraldClientError):
    """A request was in flight when the connection closed (`code` is the close code)."""


class ClientClosed(HeraldClientError):
    """The client stopped for good: `code` is the close code (or 0 when the application closed it)."""


class Unauthorized(ClientClosed):
    """Credentials refused (HTTP 401 / close 4001) and no new token could be had."""

    code = 4001


class MessageTooBig(HeraldClientError):
    """Close 1009: the server got a frame over its limit. A client bug; the client reconnects."""

    code = 1009


class NotSupported(HeraldClientError):
    """The operation needs the WebSocket transport (the client is on SSE)."""


class RequestTimeout(HeraldClientError, TimeoutError):
    """No reply (or no connection to send the request on) within the request timeout."""
