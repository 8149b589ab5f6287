"""After a connection ends: the close-code policy (`policy.py`) applied with the backoff and the
token source, as a plan — wait this long (on the next URL or the same), or stop with this error.

No sockets and no sleeping here: the connection loop carries the plan out, so every row of the
table can be checked in a unit test with a fixed random source.
"""

from __future__ import annotations

from dataclasses import dataclass

from .auth import TokenSource
from .backoff import Backoff
from .errors import ClientClosed, HeraldClientError, MessageTooBig, Unauthorized
from .policy import Action, reaction_for
from .transport import Closed

__all__ = ["Plan", "Reconnector"]


@dataclass(frozen=True, slots=True)
class Plan:
    delay: float | None  # seconds before the next attempt; None: stop
    rotate: bool = False  # the next attempt goes to the next URL
    error: HeraldClientError | None = None  # why it stops (delay None)
    notice: HeraldClientError | None = None  # something to surface although it goes on
    need_token: bool = False  # ask the token callback again before the next attempt
    renewed: bool = False  # the token callback gave a new token


class Reconnector:
    __slots__ = ("backoff", "tokens")

    def __init__(self, backoff: Backoff, tokens: TokenSource) -> None:
        self.backoff = backoff
        self.tokens = tokens

    async def plan(self, closed: Closed) -> Plan:
        reaction = reaction_for(closed.code)
        action, rotate = reaction.action, reaction.rotate
        what = f"{closed.code} {closed.reason}".strip()
        if action is Action.STOP:
            return Plan(None, error=ClientClosed(f"closed by the server: {what}", closed.code))
        if action is Action.REAUTH:
            return await self._reauth(what)
        if action is Action.ADVISED:
            return Plan(self.backoff.advised(closed.after_ms or 0), rotate)
        if action is Action.SLOW_DOWN:
            return Plan(self.backoff.slow_down(), rotate)
        notice = None
        if action is Action.BUG:
            notice = MessageTooBig(f"the server closed with 1009: a frame was over its size limit ({closed.reason})")
        return Plan(self.backoff.next_delay(), rotate, notice=notice)

    async def _reauth(self, what: str) -> Plan:
        """4001 / HTTP 401: go on only with a new token from the callback."""
        refused = self.tokens.current
        try:
            token = await self.tokens.renew()
        except Unauthorized as exc:
            return Plan(None, error=Unauthorized(f"{exc} ({what})"))
        except Exception as exc:
            return Plan(
                self.backoff.next_delay(),
                notice=HeraldClientError(f"the token callback failed: {exc!r}"),
                need_token=True,
            )
        if token == refused:
            return Plan(None, error=Unauthorized(f"the token callback gave the refused token again ({what})"))
        return Plan(self.backoff.next_delay(), renewed=True)
