"""What the client does after a connection ends: the close-code table of CONTRACT §5, as data.

HTTP answers to the WebSocket handshake or to `GET /events` are mapped onto the same table
(:func:`code_for_http_status`), so one decision covers both transports.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from herald.core.protocol.closecodes import CloseCode

__all__ = ["Action", "Reaction", "CLOSE_POLICY", "ABNORMAL", "reaction_for", "code_for_http_status"]

#: RFC 6455's "no close frame" (connection reset, refused, timed out): not sent on the wire.
ABNORMAL = 1006


class Action(enum.Enum):
    STOP = "stop"  # final: do not reconnect
    REAUTH = "reauth"  # get a new token from the callback first; final without a callback
    ADVISED = "advised"  # wait the advisory's after_ms plus jitter
    BACKOFF = "backoff"  # exponential backoff with full jitter
    SLOW_DOWN = "slow_down"  # backoff, but not at once (start a few rungs up)
    BUG = "bug"  # surface an error to the application, then reconnect with backoff


@dataclass(frozen=True, slots=True)
class Reaction:
    action: Action
    rotate: bool  # try the next URL of the list (the node is going away, full or unreachable)


CLOSE_POLICY: Mapping[int, Reaction] = MappingProxyType(
    {
        CloseCode.NORMAL: Reaction(Action.STOP, False),
        CloseCode.GOING_AWAY: Reaction(Action.BACKOFF, True),
        ABNORMAL: Reaction(Action.BACKOFF, True),
        CloseCode.MESSAGE_TOO_BIG: Reaction(Action.BUG, False),
        CloseCode.INTERNAL_ERROR: Reaction(Action.BACKOFF, True),
        CloseCode.SERVICE_RESTART: Reaction(Action.ADVISED, True),
        CloseCode.TRY_AGAIN_LATER: Reaction(Action.SLOW_DOWN, True),
        CloseCode.IDLE_TIMEOUT: Reaction(Action.BACKOFF, False),
        CloseCode.UNAUTHORIZED: Reaction(Action.REAUTH, False),
        CloseCode.FORBIDDEN: Reaction(Action.STOP, False),
        CloseCode.SLOW_CONSUMER: Reaction(Action.BACKOFF, False),
        CloseCode.TOO_MANY_CONNECTIONS: Reaction(Action.SLOW_DOWN, False),
    }
)

_UNKNOWN = Reaction(Action.BACKOFF, True)


def reaction_for(code: int) -> Reaction:
    """The reaction to close code `code`; unknown codes back off and try the next URL."""
    return CLOSE_POLICY.get(code, _UNKNOWN)


def code_for_http_status(status: int) -> int:
    """The close code equivalent to an HTTP refusal of a WebSocket handshake or an SSE request."""
    if status == 401:
        return CloseCode.UNAUTHORIZED
    if status == 403:
        return CloseCode.FORBIDDEN
    if status == 429:
        return CloseCode.TOO_MANY_CONNECTIONS
    if status == 413:
        return CloseCode.MESSAGE_TOO_BIG
    return ABNORMAL  # 503 draining / engine down, proxies' 5xx: back off, next URL
