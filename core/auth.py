"""JWT verification (PyJWT) and the permissions a token grants.

Pure: the current time is passed in, so token expiry is decided by the caller's clock and tests need
no sleeping. `alg: none` and every algorithm other than the configured one are rejected.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import jwt

from .config import JwtConfig
from .protocol.envelope import personal_channel
from .protocol.errors import ConfigError, Unauthorized

__all__ = ["Principal", "Authenticator", "PatternSet"]

_CACHE_SIZE = 50_000  # verified tokens remembered (a token is ~300 bytes)


class PatternSet:
    """Glob patterns from a token claim (`room:*`), compiled once into one regex."""

    __slots__ = ("_re", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._re = re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None

    def matches(self, channel: str) -> bool:
        return self._re is not None and self._re.match(channel) is not None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection is and what its token lets it do."""

    user: str
    exp: float
    channels: PatternSet
    publish: PatternSet
    info: dict[str, Any] | None

    def may_subscribe(self, channel: str) -> bool:
        if channel.startswith("user:"):
            return channel == personal_channel(self.user)
        return self.channels.matches(channel)

    def may_publish(self, channel: str) -> bool:
        return self.publish.matches(channel)


def _patterns(claims: dict[str, Any], name: str) -> PatternSet:
    value = claims.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and 0 < len(p) <= 255 for p in value):
        raise Unauthorized(f"claim '{name}' must be a list of patterns")
    return PatternSet(tuple(value[:256]))


class Authenticator:
    """Verifies client JWTs against the configured algorithm and key."""

    def __init__(self, config: JwtConfig, leeway: float = 0.0) -> None:
        self._config = config
        self._leeway = leeway
        self._keys: dict[str | None, Any] = {}
        self._verified: dict[str, tuple[Principal, float | None]] = {}
        if config.algorithm == "HS256":
            if not config.secret:
                raise ConfigError("jwt: HS256 needs --jwt-secret")
            self._keys[None] = config.secret
        elif config.jwks_file:
            with open(config.jwks_file, encoding="utf-8") as f:
                jwks = jwt.PyJWKSet.from_dict(json.load(f))
            for key in jwks.keys:
                self._keys[key.key_id] = key.key
            if not self._keys:
                raise ConfigError("jwt: the JWKS file holds no usable key")
        elif config.public_key_file:
            with open(config.public_key_file, encoding="utf-8") as f:
                self._keys[None] = f.read()
        else:
            raise ConfigError(f"jwt: {config.algorithm} needs --jwt-public-key or --jwks-file")

    def _key_for(self, token: str) -> Any:
        if None in self._keys:
            return self._keys[None]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed token") from exc
        if kid in self._keys:
            return self._keys[kid]
        if len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise Unauthorized("unknown key id")

    def verify(self, token: str, now: float) -> Principal:
        """Decode and check `token` at time `now`; raise Unauthorized with a safe message.

        A verified token is remembered (bounded): a reconnect storm presents the same tokens
        again, and only the time-dependent checks need repeating for them."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, nbf = cached
            if principal.exp + self._leeway <= now:
                raise Unauthorized("token expired")
            if nbf is not None and nbf - self._leeway > now:
                raise Unauthorized("token not yet valid")
            return principal
        principal, nbf = self._verify(token, now)
        if len(self._verified) >= _CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, nbf)
        return principal

    def _verify(self, token: str, now: float) -> tuple[Principal, float | None]:
        if not token or len(token) > 8192:
            raise Unauthorized("missing or oversized token")
        cfg = self._config
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=[cfg.algorithm],
                audience=cfg.audience,
                issuer=cfg.issuer,
                options={
                    "require": ["sub", "exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": cfg.audience is not None,
                    "verify_iss": cfg.issuer is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from exc
        exp, sub = claims.get("exp"), claims.get("sub")
        if type(exp) not in (int, float) or not math.isfinite(exp) or exp + self._leeway <= now:
            raise Unauthorized("token expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf - self._leeway > now:
            raise Unauthorized("token not yet valid")
        iat = claims.get("iat")
        if isinstance(iat, (int, float)) and iat - self._leeway > now + 60:
            raise Unauthorized("token issued in the future")
        if not isinstance(sub, str) or not 0 < len(sub) <= 200 or not re.fullmatch(r"[A-Za-z0-9_\-:.@/=]+", sub):
            raise Unauthorized("claim 'sub' must be a user id usable in a channel name")
        info = claims.get("info")
        if info is not None and not isinstance(info, dict):
            raise Unauthorized("claim 'info' must be an object")
        principal = Principal(sub, float(exp), _patterns(claims, "channels"), _patterns(claims, "publish"), info)
        return principal, float(nbf) if isinstance(nbf, (int, float)) else None
