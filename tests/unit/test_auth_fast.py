"""The HS256 fast path in core.auth: it accepts and rejects exactly as PyJWT's `jwt.decode` does.

The fast path decides only "valid" and "bad signature" and hands every other token to PyJWT, so the
properties compare it with `jwt.decode` directly and compare a whole `Authenticator.verify` with one
that has the fast path switched off, on generated tokens: valid, tampered, re-headed, expired, mangled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.core.auth import Authenticator
from herald.core.config import JwtConfig
from herald.core.protocol.errors import Unauthorized
from tests.unit._support import NOW, SECRET

EXP = int(NOW) + 600
KEY = SECRET.encode()
#: The options core.auth gives jwt.decode when no audience or issuer is configured.
OPTIONS: Any = {
    "require": ["sub", "exp"],
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
}
PLAIN = b'{"alg":"HS256","typ":"JWT"}'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: bytes, payload: bytes, key: bytes = KEY) -> str:
    """A compact JWT over raw header and payload bytes, HMAC-SHA256 signed with `key`."""
    h, p = b64(header), b64(payload)
    return f"{h}.{p}.{b64(hmac.new(key, f'{h}.{p}'.encode(), hashlib.sha256).digest())}"


def fast_auth() -> Authenticator:
    auth = Authenticator(JwtConfig(secret=SECRET))
    assert auth._fast is not None
    return auth


def pyjwt_auth() -> Authenticator:
    """The same Authenticator with the fast path switched off: every token goes through jwt.decode."""
    auth = Authenticator(JwtConfig(secret=SECRET))
    auth._fast = None
    return auth


FAST, REFERENCE = fast_auth(), pyjwt_auth()


def outcome(auth: Authenticator, token: str) -> tuple[Any, ...]:
    """What verify() makes of a token: the principal's fields (types kept), or the error and its message."""
    try:
        p = auth.verify(token, NOW)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))
    return ("accepted", p.user, repr(p.exp), p.channels.patterns, p.publish.patterns, json.dumps(p.info))


def fast_decode(token: str) -> Any:
    assert FAST._fast is not None
    try:
        return FAST._fast.decode(token)
    except Unauthorized as exc:
        return exc


# --- generated tokens -----------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
_claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.sampled_from(["alice", "bench-1", "a_b-c:d.e@f/g=h", ""]) | _json,
        "exp": st.sampled_from([EXP, EXP + 0.5, int(NOW) - 1, int(NOW), 10**20, 10**400, True]) | _json,
        "nbf": st.sampled_from([int(NOW) - 5, int(NOW) + 5, 10**400]) | _json,
        "iat": st.sampled_from([int(NOW) - 5, int(NOW) + 3600]) | _json,
        "jti": st.sampled_from(["j1"]) | _json,
        "aud": _json,
        "iss": _json,
        "channels": st.lists(st.sampled_from(["*", "room:*", "lobby", ""]), max_size=3) | _json,
        "publish": st.lists(st.sampled_from(["room:*", "x?y"]), max_size=3) | _json,
        "info": st.dictionaries(st.text(max_size=6), _json, max_size=3) | _json,
    },
)
#: JSON as real issuers write it: finite floats of a few decimals, integers within 64 bits (a number of 19 or
#: more digits is left to PyJWT: orjson reads big integers as floats).
_plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False).map(lambda f: round(f, 6))
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
_valid_claims = st.fixed_dictionaries(
    {"sub": st.sampled_from(["alice", "bench-1"]), "exp": st.sampled_from([EXP, EXP + 0.25])},
    optional={
        "channels": st.lists(st.sampled_from(["*", "room:*"]), max_size=2),
        "info": st.dictionaries(st.text(max_size=6), _plain_json, max_size=3),
        "jti": st.just("j"),
    },
)
#: Documents where orjson and json may disagree, or that only json reads.
_TRICKY = [
    b'{"sub":"alice","exp":%d}' % EXP,
    b'{"sub":"alice","exp":1e400}',
    b'{"sub":"alice","exp":Infinity}',
    b'{"sub":"alice","exp":NaN}',
    b'{"sub":"alice","exp":%d,"info":{"n":123456789012345678901234}}' % EXP,
    b'{"sub":"alice","exp":%d,"info":{"n":-9223372036854775809}}' % EXP,
    b'{"sub":"alice","exp":%d,"info":{"s":"\\ud800"}}' % EXP,
    b'{"sub":"alice","exp":%d,"info":{"s":"\\ud83d\\ude00"}}' % EXP,
    b'{"sub":"alice","exp":%d,"info":{"a":1,"a":2,"b":3}}' % EXP,
    b'{"sub":"alice","sub":"bob","exp":%d}' % EXP,
    b'\xef\xbb\xbf{"sub":"alice","exp":%d}' % EXP,
    ('{"sub":"alice","exp":%d}' % EXP).encode("utf-16"),
    b'{"sub":"alice","exp":%d,"info":{"d":%s1%s}}' % (EXP, b"[" * 300, b"]" * 300),
    b'{"sub":"alice","exp":%d,"info":{"d":%s1%s}}' % (EXP, b"[" * 1100, b"]" * 1100),
    b'{"sub":"alice","exp":%d}\x00' % EXP,
    b' {"sub":"alice","exp":%d} ' % EXP,
    b'{"sub":"alice","exp":%d,"info":{"s":"\xff"}}' % EXP,
    b"[]",
    b"null",
    b'"x"',
    b"",
]
_valid_payloads = _valid_claims.map(lambda c: json.dumps(c, separators=(",", ":")).encode())
_payloads = (
    _valid_payloads  # repeated: weights the shape the fast path accepts
    | _valid_payloads
    | _claims.map(lambda c: json.dumps(c).encode())
    | st.sampled_from(_TRICKY)
    | st.binary(max_size=40)
)
_PLAIN_HEADERS = [PLAIN, b'{"typ":"JWT","alg":"HS256"}', b'{"alg":"HS256"}', b'{"alg":"HS256","kid":"k1"}']
_ODD_HEADERS = [
    b'{"alg":"none","alg":"HS256"}',
    b'{"alg":"HS256","alg":"none"}',
    b'{"alg":"HS256","crit":["b64"]}',
    b'{"alg":"HS256","b64":false,"crit":["b64"]}',
    b'{"alg":"HS256","kid":7}',
    b'{"alg":"HS256","typ":[]}',
    b'{"alg":"HS256","cty":"JWT"}',
    b'\xef\xbb\xbf{"alg":"HS256"}',
    b'{"alg":"HS\\u0032\\u0035\\u0036"}',
    b'["HS256"]',
    b'"HS256"',
    b"{}",
    b"",
    b"\xff",
]
_ALGS = ["HS256", "none", "None", "NONE", "HS512", "RS256", "ES256", "hs256", "HS256 "]
_headers = (
    st.sampled_from(_PLAIN_HEADERS)  # repeated: weights the shape the fast path accepts
    | st.sampled_from(_PLAIN_HEADERS)
    | st.sampled_from(_PLAIN_HEADERS + _ODD_HEADERS)
    | st.fixed_dictionaries(
        {"alg": st.sampled_from(_ALGS) | _json},
        optional={"typ": _json, "kid": _json, "crit": _json, "b64": _json, "cty": _json},
    ).map(lambda h: json.dumps(h).encode())
)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """A signed token, then at most one mutation: the kinds of garbage a connect storm may bring."""
    token = sign(draw(_headers), draw(_payloads), draw(st.sampled_from([KEY, KEY, KEY, b"w" * 32])))
    h, p, s = token.split(".")
    kind = draw(st.sampled_from(["none"] * 4 + ["sig", "payload", "pad", "last", "insert", "segments", "text"]))
    if kind == "sig":  # one signature character changed
        i = draw(st.integers(0, len(s) - 1))
        s = s[:i] + draw(st.sampled_from(_ALPHABET.replace(s[i], ""))) + s[i + 1 :]
    elif kind == "payload":  # another payload under the same signature
        p = b64(draw(_payloads))
    elif kind == "pad":  # '=' padding on one segment
        segs = [h, p, s]
        i = draw(st.integers(0, 2))
        segs[i] += draw(st.sampled_from(["=", "==", "==="]))
        return ".".join(segs)
    elif kind == "last":  # a different last character: non-canonical bits or a different value
        segs = [h, p, s]
        i = draw(st.integers(0, 2))
        if segs[i]:
            segs[i] = segs[i][:-1] + draw(st.sampled_from(_ALPHABET))
        return ".".join(segs)
    elif kind == "insert":
        token = f"{h}.{p}.{s}"
        i = draw(st.integers(0, len(token)))
        inserted = draw(st.sampled_from([".", "=", "+", "/", " ", "\n", "!", "\u00e9", "\ud800", "A"]))
        return token[:i] + inserted + token[i:]
    elif kind == "segments":
        return draw(
            st.sampled_from(
                [f"{h}.{p}", f"{h}.{p}.{s}.", f"{h}.{p}.{s}.{s}", f".{p}.{s}", f"{h}..{s}", f"{h}.{p}.", f"{h}{p}.{s}"]
            )
        )
    elif kind == "text":
        return draw(st.text(max_size=60))
    return f"{h}.{p}.{s}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens())
def test_the_fast_path_decides_only_what_jwt_decode_decides(token: str) -> None:
    """Claims from the fast path equal jwt.decode's (types kept); its only rejection is PyJWT's bad signature."""
    fast = fast_decode(token)
    if fast is None:
        return  # left to PyJWT
    try:
        reference: Any = jwt.decode(token, SECRET, algorithms=["HS256"], options=OPTIONS)
    except Exception as exc:
        reference = exc
    if isinstance(fast, Unauthorized):
        assert isinstance(reference, jwt.InvalidSignatureError)
        assert str(fast) == "invalid token: InvalidSignatureError"
    else:
        assert isinstance(reference, dict), reference
        assert json.dumps(fast) == json.dumps(reference)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens())
def test_verify_with_the_fast_path_matches_verify_through_pyjwt(token: str) -> None:
    """Same principal or same error message, with and without the fast path."""
    assert outcome(FAST, token) == outcome(REFERENCE, token)


@settings(max_examples=200, deadline=None)
@given(_valid_claims)
def test_plain_valid_tokens_take_the_fast_path(claims: dict[str, Any]) -> None:
    """The shape real issuers produce is decided by the fast path, not handed to PyJWT."""
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert fast_decode(token) == jwt.decode(token, SECRET, algorithms=["HS256"], options=OPTIONS)
    assert outcome(FAST, token) == outcome(REFERENCE, token)
    assert outcome(FAST, token)[0] == "accepted"


# --- explicit attacks ------------------------------------------------------------------------


def _rejected(token: str) -> str:
    with pytest.raises(Unauthorized) as info:
        FAST.verify(token, NOW)
    assert outcome(REFERENCE, token) == ("raised", "Unauthorized", str(info.value))
    return str(info.value)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_alg_none_is_rejected_signed_or_not(alg: str) -> None:
    """`alg: none` (any case, empty signature or an HMAC one) never verifies; PyJWT names the algorithm."""
    header = json.dumps({"alg": alg, "typ": "JWT"}).encode()
    body = json.dumps({"sub": "alice", "exp": EXP}).encode()
    assert _rejected(f"{b64(header)}.{b64(body)}.") == "invalid token: InvalidAlgorithmError"
    assert _rejected(sign(header, body)) == "invalid token: InvalidAlgorithmError"
    assert fast_decode(sign(header, body)) is None


def test_alg_none_from_pyjwt_is_rejected() -> None:
    token = jwt.encode({"sub": "alice", "exp": EXP}, None, algorithm="none")
    assert _rejected(token) == "invalid token: InvalidAlgorithmError"


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA", "hs256", "HS256 "])
def test_another_alg_is_rejected_even_when_signed_with_the_secret(alg: str) -> None:
    """Algorithm confusion: a token naming another algorithm but HMAC-signed with our secret is refused."""
    body = json.dumps({"sub": "alice", "exp": EXP}).encode()
    assert _rejected(sign(json.dumps({"alg": alg}).encode(), body)) == "invalid token: InvalidAlgorithmError"


def test_a_token_signed_with_a_public_key_as_hmac_secret_is_rejected() -> None:
    """The classic RS256→HS256 confusion: an HMAC made with a PEM public key is just a wrong signature."""
    pem = b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
    token = sign(PLAIN, json.dumps({"sub": "alice", "exp": EXP}).encode(), pem)
    assert _rejected(token) == "invalid token: InvalidSignatureError"


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (b'{"alg":"HS256","crit":["exp"]}', "InvalidTokenError"),
        (b'{"alg":"HS256","crit":"b64"}', "InvalidTokenError"),
        (b'{"alg":"HS256","b64":false,"crit":["b64"]}', "DecodeError"),
        (b'["HS256"]', "DecodeError"),
        (b'"HS256"', "DecodeError"),
        (b'{"alg":"HS256","kid":1}', "InvalidTokenError"),
        (b"{}", "InvalidAlgorithmError"),
    ],
    ids=["crit", "crit-str", "b64", "list", "string", "kid-int", "no-alg"],
)
def test_headers_pyjwt_refuses_are_refused_with_its_error(header: bytes, error: str) -> None:
    """crit, b64, non-object headers and a missing alg go to PyJWT and fail as they always did."""
    assert _rejected(sign(header, json.dumps({"sub": "alice", "exp": EXP}).encode())) == f"invalid token: {error}"


def test_padding_and_segment_tricks_are_judged_by_pyjwt() -> None:
    """Non-canonical base64 and extra segments are never accepted by the fast path."""
    good = sign(PLAIN, json.dumps({"sub": "alice", "exp": EXP}).encode())
    h, p, s = good.split(".")
    assert FAST.verify(good, NOW).user == "alice"
    stray_bits = s[:-1] + "B"  # 43 characters carry 258 bits: the last two must be zero
    for token in (f"{h}.{p}.{s}.", f"{h}.{p}.{s}.{s}", f"{h}.{p}.{stray_bits}", f"{h}.{p}=.{s}", f"{h}.{p}.{s}=="):
        assert fast_decode(token) is None
        assert outcome(FAST, token) == outcome(REFERENCE, token)
    assert outcome(FAST, f"{h}.{p}.{stray_bits}")[0] == "raised"


def test_an_expired_fast_path_token_is_rejected_as_expired() -> None:
    assert _rejected(jwt.encode({"sub": "alice", "exp": int(NOW)}, SECRET, algorithm="HS256")) == "token expired"


def test_a_lone_surrogate_in_a_token_is_unauthorized() -> None:
    """jwt.decode cannot even encode such a token; verify still answers Unauthorized."""
    assert _rejected("a\ud800.b.c") == "invalid token: DecodeError"


# --- configuration, sharing and memory -----------------------------------------------------------


def test_the_fast_path_is_off_when_audience_or_issuer_is_configured() -> None:
    """aud/iss checks stay with PyJWT (and the verified-token cache stays on for that slower path)."""
    auth = Authenticator(JwtConfig(secret=SECRET, audience="herald"))
    assert auth._fast is None and auth._verified is not None
    assert auth.verify(jwt.encode({"sub": "a", "exp": EXP, "aud": "herald"}, SECRET), NOW).user == "a"


def test_a_secret_pyjwt_refuses_as_an_hmac_key_disables_the_fast_path() -> None:
    """A PEM-looking secret fails every token through PyJWT, exactly as before."""
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
    auth = Authenticator(JwtConfig(secret=pem))
    assert auth._fast is None
    with pytest.raises(Unauthorized, match="InvalidKeyError"):
        auth.verify(sign(PLAIN, json.dumps({"sub": "a", "exp": EXP}).encode(), pem.encode()), NOW)


def test_a_short_secret_warns_once_at_construction() -> None:
    """PyJWT's InsecureKeyLengthWarning is given when the key is prepared, not on every token."""
    with pytest.warns(jwt.warnings.InsecureKeyLengthWarning):
        auth = Authenticator(JwtConfig(secret="short"))
    token = sign(PLAIN, json.dumps({"sub": "a", "exp": EXP}).encode(), b"short")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert auth.verify(token, NOW).user == "a"


def test_principals_with_the_same_patterns_share_one_pattern_set() -> None:
    """Per-connection memory: identical channels/publish tuples are compiled and held once."""
    auth = fast_auth()
    a = auth.verify(jwt.encode({"sub": "a", "exp": EXP, "channels": ["*"]}, SECRET), NOW)
    b = auth.verify(jwt.encode({"sub": "b", "exp": EXP, "channels": ["*"]}, SECRET), NOW)
    c = auth.verify(jwt.encode({"sub": "c", "exp": EXP, "channels": ["room:*"]}, SECRET), NOW)
    assert a.channels is b.channels and a.publish is b.publish is c.publish
    assert c.channels is not a.channels and c.channels.patterns == ("room:*",)


def test_the_shared_pattern_sets_are_bounded() -> None:
    auth = fast_auth()
    for i in range(1100):
        token = jwt.encode({"sub": "a", "exp": EXP, "channels": [f"r{i}:*"]}, SECRET)
        assert auth.verify(token, NOW).may_subscribe(f"r{i}:x")
    assert len(auth._pattern_sets) <= 1024


def test_the_fast_path_keeps_no_token_cache() -> None:
    """At ~10 µs a verify, holding every token string is not worth it; expiry is still checked each time."""
    auth = fast_auth()
    token = jwt.encode({"sub": "a", "exp": EXP}, SECRET)
    assert auth.verify(token, NOW).user == "a"
    assert auth._verified is None
    with pytest.raises(Unauthorized, match="token expired"):
        auth.verify(token, EXP)
