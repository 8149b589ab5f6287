"""Credentials: a token string, or a callback (sync or async) that is asked again for a new one.

The callback is called for the first connection when no token string was given, before the
current token expires (refresh; see :meth:`TokenSource.refresh_delay`), and after the server
refused the token (HTTP 401 / close 4001). The token's `exp` claim is read without verifying the
signature — only to know when to refresh; the server does the verifying.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import Unauthorized

__all__ = ["TokenCallback", "TokenSource", "jwt_claims", "jwt_expiry"]

TokenCallback = Callable[[], str | Awaitable[str]]


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified; {} when `token` is not a readable JWT."""
    try:
        payload = token.split(".")[1]
        claims: Any = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return claims if isinstance(claims, dict) else {}


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT in seconds, or None (not a JWT, no exp)."""
    exp = jwt_claims(token).get("exp")
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


class TokenSource:
    __slots__ = ("current", "_callback")

    def __init__(self, token: str | TokenCallback | None) -> None:
        self._callback: TokenCallback | None = None
        self.current: str | None = None
        if callable(token):
            self._callback = token
        else:
            self.current = token

    @property
    def renewable(self) -> bool:
        return self._callback is not None

    async def get(self) -> str | None:
        """The token for the next connection (asks the callback when there is none yet)."""
        if self.current is None and self._callback is not None:
            await self.renew()
        return self.current

    async def renew(self) -> str:
        """Ask the callback for a new token; Unauthorized when there is no callback or it gave
        nothing. Exceptions of the callback propagate."""
        if self._callback is None:
            raise Unauthorized("the token was refused and there is no token callback to get a new one")
        result = self._callback()
        token = await result if inspect.isawaitable(result) else result
        if not isinstance(token, str) or not token:
            raise Unauthorized("the token callback returned no token")
        self.current = token
        return token

    def refresh_delay(self, now: float, margin: float) -> float | None:
        """Seconds from `now` until the token should be refreshed: `margin` (at most a fifth of
        its remaining life) before `exp`, and not sooner than 1 s. None without a callback or exp."""
        if self._callback is None or self.current is None:
            return None
        exp = jwt_expiry(self.current)
        if exp is None:
            return None
        left = exp - now
        return max(1.0, left - min(margin, 0.2 * left))
