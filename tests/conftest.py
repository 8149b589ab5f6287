"""Shared test helpers: timeouts scaled by HERALD_TESTS_TIMEOUT_FACTOR, token minting."""

from __future__ import annotations

import os
import time
from typing import Any

import jwt

TIMEOUT_FACTOR = float(os.environ.get("HERALD_TESTS_TIMEOUT_FACTOR", "1"))
#: A unit of waiting: every timeout in the suite is a multiple of this.
MS = 0.001 * TIMEOUT_FACTOR


def seconds(s: float) -> float:
    return s * TIMEOUT_FACTOR


def make_token(
    user: str,
    *,
    secret: str = "dev-secret",
    channels: list[str] | None = None,
    publish: list[str] | None = None,
    ttl: float = 600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"sub": user, "exp": int(time.time() + ttl)}
    payload["channels"] = ["room:*", "news:*", "bench*"] if channels is None else channels
    payload["publish"] = ["room:*"] if publish is None else publish
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)
