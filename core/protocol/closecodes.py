"""WebSocket close codes of CONTRACT.md §5 and the reconnect advisories sent before a graceful close.

Ranges: 1000–1015 are RFC 6455 codes; 4000–4999 are Herald's application codes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CloseCode", "Advisory", "ADVISORY_DRAIN", "ADVISORY_REBALANCE", "ADVISORY_SLOW"]


class CloseCode(enum.IntEnum):
    NORMAL = 1000  # do not reconnect
    GOING_AWAY = 1001  # hard stop: reconnect with backoff
    MESSAGE_TOO_BIG = 1009  # fix and reconnect
    INTERNAL_ERROR = 1011  # reconnect with backoff
    SERVICE_RESTART = 1012  # drain or rebalance: reconnect after `after_ms` + jitter, resume
    TRY_AGAIN_LATER = 1013  # node full
    IDLE_TIMEOUT = 4000
    UNAUTHORIZED = 4001  # get a new token first
    FORBIDDEN = 4003  # disconnected by the server API: do not reconnect
    SLOW_CONSUMER = 4008  # send buffer over limit: reconnect and resume
    TOO_MANY_CONNECTIONS = 4029  # per-user limit: do not reconnect at once


@dataclass(frozen=True, slots=True)
class Advisory:
    """A `reconnect` advisory: sent as {"type":"reconnect","reason":...,"after_ms":...} before the close."""

    reason: str
    close_code: CloseCode


ADVISORY_DRAIN = Advisory("drain", CloseCode.SERVICE_RESTART)
ADVISORY_REBALANCE = Advisory("rebalance", CloseCode.SERVICE_RESTART)
ADVISORY_SLOW = Advisory("slow", CloseCode.SLOW_CONSUMER)
