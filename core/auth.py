"""JWT verification (PyJWT, with an HS256 fast path) and the permissions a token grants.

Pure: the current time is passed in, so token expiry is decided by the caller's clock and tests need
no sleeping. `alg: none` and every algorithm other than the configured one are rejected.

Connect rate is a benchmark target, and `jwt.decode` spends most of its ~30 µs a token on per-call work:
`prepare_key`'s PEM/SSH/DER/JWK checks, a per-character base64url alphabet scan, stdlib json, option
merging. PyJWT's own seams (a pre-built `PyJWT`, a registered `HMACAlgorithm` with a prepared key) only
get that to ~20 µs, so HS256 without aud/iss has a narrow fast path, `_HS256`: the key is prepared once by
PyJWT's `HMACAlgorithm.prepare_key`, the token must be exactly three canonical base64url segments, the
header exactly `alg: "HS256"` plus string `typ`/`kid`, the signature is compared with
`hmac.compare_digest`, and the payload is parsed by orjson only where orjson and json agree. It decides
just two outcomes, "valid" and "bad signature"; every other token goes to `jwt.decode`, so each rejection
keeps PyJWT's exception name in its message. tests/unit/test_auth_fast.py checks it against `jwt.decode`.
"""

from __future__ import annotations

import base64
import fnmatch
import hmac
import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from jwt.algorithms import HMACAlgorithm
from jwt.types import Options
from jwt.warnings import InsecureKeyLengthWarning

from .config import JwtConfig
from .protocol.envelope import SYSTEM_PREFIX, personal_channel
from .protocol.errors import ConfigError, Unauthorized

__all__ = ["Principal", "Authenticator", "PatternSet"]

#: Verified tokens remembered when verification is expensive (RS256/ES256, or HS256 through PyJWT). The
#: HS256 fast path (~10 µs) keeps no cache: a hit saves ~10 µs on a reconnect but holds the ~200-byte
#: token string and a dict slot for every connection.
_CACHE_SIZE = 50_000
#: Distinct permission-pattern tuples whose compiled PatternSet is shared between principals.
_PATTERN_SETS = 1024
_SUB = re.compile(r"[A-Za-z0-9_\-:.@/=]+")


class PatternSet:
    """Glob patterns from a token claim (`room:*`), compiled once into one regex."""

    __slots__ = ("_re", "_system_re", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._re = _compile(patterns)
        self._system_re = _compile(tuple(p for p in patterns if p.startswith(SYSTEM_PREFIX)))

    def matches(self, channel: str) -> bool:
        """Whether a pattern matches `channel`; for Herald's own channels (`herald:…`), only a
        pattern that names that namespace does, so `*` does not grant the cluster view."""
        pattern = self._system_re if channel.startswith(SYSTEM_PREFIX) else self._re
        return pattern is not None and pattern.match(channel) is not None


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)) if patterns else None


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
        """Herald's own channels are written by Herald (and backends), never by clients."""
        return not channel.startswith(SYSTEM_PREFIX) and self.publish.matches(channel)


def _as_float(value: Any) -> float | None:
    """A numeric claim as a float (an int beyond float range becomes ±inf); None when not a number."""
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return None


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A time claim (RFC 7519 §4.1.4-6: a NumericDate) as a finite float, None when absent.
    Present and not a number (a string, even a numeric one; a bool; NaN) → Unauthorized, on every
    path and algorithm alike."""
    if name not in claims:
        return None
    value = claims[name]
    number = _as_float(value) if type(value) in (int, float) else None  # not a bool
    if number is None or math.isnan(number):
        raise Unauthorized(f"claim '{name}' must be a number (NumericDate)")
    return number


# --- the HS256 fast path ------------------------------------------------------------------------

#: Three base64url segments; an HS256 signature is 32 bytes, 43 characters unpadded.
_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")
#: The last character of a canonical unpadded segment of length % 4 == 2 or 3 has no stray low bits.
_LAST = ("", "", "AQgw", "AEIMQUYcgkosw048")
_PLAIN_HEADER = frozenset({"alg", "typ", "kid"})
#: orjson reads integers beyond 64 bits as floats where json keeps them exact; such tokens go to PyJWT.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
#: At most this many brackets (so at most this nesting) in a fast-path payload: far below both json's
#: recursion limit and orjson's depth limit, so both parsers accept the same documents.
_MAX_BRACKETS = 256


def _canonical(segment: str) -> bool:
    rem = len(segment) & 3
    return rem == 0 or (rem != 1 and segment[-1] in _LAST[rem])


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) & 3))


class _HS256:
    """HS256 verification for the plain token shape; anything else is left to PyJWT (see the module doc)."""

    __slots__ = ("_mac", "_headers")

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod="sha256")  # keyed once; copied per token
        self._headers: set[str] = set()  # header segments already seen to be plain HS256 (bounded)

    def decode(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid token, None when only PyJWT can decide, Unauthorized for a bad signature."""
        m = _COMPACT.fullmatch(token)
        if m is None:
            return None
        header, payload, signature = m.groups()
        if not (_canonical(header) and _canonical(payload) and signature[-1] in _LAST[3]):
            return None
        if header not in self._headers and not self._plain_header(header):
            return None
        mac = self._mac.copy()
        mac.update(token[: m.end(2)].encode())
        if not hmac.compare_digest(_b64decode(signature), mac.digest()):
            raise Unauthorized("invalid token: InvalidSignatureError")
        raw = _b64decode(payload)
        if raw.count(b"[") + raw.count(b"{") > _MAX_BRACKETS or _LONG_NUMBER.search(raw):
            return None
        try:
            claims = orjson.loads(raw)
        except orjson.JSONDecodeError:  # NaN, Infinity, lone surrogates, a BOM: json may still read it
            return None
        # PyJWT's checks with our options: sub and exp required, sub and jti strings.
        if type(claims) is not dict or type(claims.get("sub")) is not str or claims.get("exp") is None:
            return None
        if "jti" in claims and type(claims["jti"]) is not str:
            return None
        return claims

    def _plain_header(self, segment: str) -> bool:
        try:
            header = orjson.loads(_b64decode(segment))
        except orjson.JSONDecodeError:
            return False
        if type(header) is not dict or header.get("alg") != "HS256" or not header.keys() <= _PLAIN_HEADER:
            return False
        if any(type(v) is not str for v in header.values()):
            return False
        if len(self._headers) < 64:
            self._headers.add(segment)
        return True


def _hs256_fast_path(config: JwtConfig) -> _HS256 | None:
    """The fast path for this configuration, or None (aud/iss checks, or a key PyJWT refuses, stay with PyJWT)."""
    if config.algorithm != "HS256" or config.audience is not None or config.issuer is not None:
        return None
    alg = HMACAlgorithm(HMACAlgorithm.SHA256)
    try:
        key = alg.prepare_key(config.secret or "")
    except (jwt.PyJWTError, ValueError):  # jwt.decode raises the same for every token
        return None
    message = alg.check_key_length(key)
    if message:  # jwt.decode warns on each call; once is enough
        warnings.warn(message, InsecureKeyLengthWarning, stacklevel=3)
    return _HS256(key)


class Authenticator:
    """Verifies client JWTs against the configured algorithm and key."""

    def __init__(self, config: JwtConfig, leeway: float = 0.0) -> None:
        self._config = config
        self._leeway = leeway
        self._keys: dict[str | None, Any] = {}
        self._options: Options = {
            "require": ["sub", "exp"],
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": config.audience is not None,
            "verify_iss": config.issuer is not None,
        }
        self._pattern_sets: dict[tuple[str, ...], PatternSet] = {}
        self._fast: _HS256 | None = None
        if config.algorithm == "HS256":
            if not config.secret:
                raise ConfigError("jwt: HS256 needs --jwt-secret")
            self._keys[None] = config.secret
            self._fast = _hs256_fast_path(config)
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
        self._verified: dict[str, tuple[Principal, float | None]] | None = None if self._fast else {}

    def _key_for(self, token: str) -> Any:
        if None in self._keys:
            return self._keys[None]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except (jwt.PyJWTError, UnicodeError) as exc:  # UnicodeError: a lone surrogate in the token
            raise Unauthorized("malformed token") from exc
        if kid in self._keys:
            return self._keys[kid]
        if len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise Unauthorized("unknown key id")

    def verify(self, token: str, now: float) -> Principal:
        """Decode and check `token` at time `now`; raise Unauthorized with a safe message.

        Where verification is expensive a verified token is remembered (bounded): a reconnect storm
        presents the same tokens again, and only the time-dependent checks need repeating for them."""
        cache = self._verified
        if cache is None:
            return self._verify(token, now)[0]
        cached = cache.get(token)
        if cached is not None:
            principal, nbf = cached
            if principal.exp + self._leeway <= now:
                raise Unauthorized("token expired")
            if nbf is not None and nbf - self._leeway > now:
                raise Unauthorized("token not yet valid")
            return principal
        principal, nbf = self._verify(token, now)
        if len(cache) >= _CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[token] = (principal, nbf)
        return principal

    def _verify(self, token: str, now: float) -> tuple[Principal, float | None]:
        if not token or len(token) > 8192:
            raise Unauthorized("missing or oversized token")
        claims = self._fast.decode(token) if self._fast is not None else None
        if claims is None:
            claims = self._decode(token)
        return self._principal(claims, now)

    def _decode(self, token: str) -> dict[str, Any]:
        cfg = self._config
        try:
            return jwt.decode(
                token,
                self._key_for(token),
                algorithms=[cfg.algorithm],
                audience=cfg.audience,
                issuer=cfg.issuer,
                options=self._options,
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {type(exc).__name__}") from exc
        except UnicodeError as exc:  # a lone surrogate: PyJWT encodes the token before its own checks
            raise Unauthorized("invalid token: DecodeError") from exc

    def _principal(self, claims: dict[str, Any], now: float) -> tuple[Principal, float | None]:
        leeway = self._leeway
        sub = claims.get("sub")
        expires, nbf, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "nbf"), _numeric_date(claims, "iat")
        if expires is None or not math.isfinite(expires) or expires + leeway <= now:
            raise Unauthorized("token expired")
        if nbf is not None and nbf - leeway > now:
            raise Unauthorized("token not yet valid")
        if iat is not None and iat - leeway > now + 60:
            raise Unauthorized("token issued in the future")
        if not isinstance(sub, str) or not 0 < len(sub) <= 200 or not _SUB.fullmatch(sub):
            raise Unauthorized("claim 'sub' must be a user id usable in a channel name")
        info = claims.get("info")
        if info is not None and not isinstance(info, dict):
            raise Unauthorized("claim 'info' must be an object")
        channels, publish = self._patterns(claims, "channels"), self._patterns(claims, "publish")
        return Principal(sub, expires, channels, publish, info), nbf

    def _patterns(self, claims: dict[str, Any], name: str) -> PatternSet:
        """The claim's PatternSet, shared with every principal holding the same patterns (bounded)."""
        value = claims.get(name, [])
        if not isinstance(value, list) or not all(isinstance(p, str) and 0 < len(p) <= 255 for p in value):
            raise Unauthorized(f"claim '{name}' must be a list of patterns")
        patterns = tuple(value[:256])
        shared = self._pattern_sets.get(patterns)
        if shared is None:
            shared = PatternSet(patterns)
            if len(self._pattern_sets) >= _PATTERN_SETS:
                del self._pattern_sets[next(iter(self._pattern_sets))]
            self._pattern_sets[patterns] = shared
        return shared
