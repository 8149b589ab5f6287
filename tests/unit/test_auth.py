"""JWT verification and token permissions (CONTRACT §2-3), with the clock passed in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.auth import Authenticator, Principal
from herald.core.config import JwtConfig
from herald.core.protocol.errors import ConfigError, Unauthorized
from herald.core.protocol.session import State
from tests.unit._support import NOW, SECRET, drain, make_session, send

EXP = int(NOW) + 600


def claims(sub: Any = "alice", **extra: Any) -> dict[str, Any]:
    out = {"sub": sub, "exp": EXP}
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def hs(payload: dict[str, Any], secret: str = SECRET, **kw: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", **kw)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(payload: dict[str, Any], key: bytes, header: dict[str, Any] | None = None) -> str:
    """An HS256 JWT signed by hand (PyJWT refuses PEM keys as HMAC secrets)."""
    h = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(json.dumps(payload).encode())
    sig = hmac.new(key, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


@pytest.fixture(scope="module")
def hs_auth() -> Authenticator:
    return Authenticator(JwtConfig(secret=SECRET))


def _rejected(auth: Authenticator, token: str, now: float = NOW) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        auth.verify(token, now)
    assert info.value.code == 401
    return info.value


# --- keys ----------------------------------------------------------------------------------


def _pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key_2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_pem_file(tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path_factory.mktemp("keys") / "rsa.pem"
    path.write_bytes(_pem_public(rsa_key))
    return path


@pytest.fixture(scope="module")
def rs_auth(rsa_pem_file: Path) -> Authenticator:
    return Authenticator(JwtConfig(algorithm="RS256", public_key_file=str(rsa_pem_file)))


# --- HS256 ----------------------------------------------------------------------------------


def test_a_valid_hs256_token_yields_its_principal(hs_auth: Authenticator) -> None:
    """sub, exp, channels, publish and info come through from a valid token."""
    p = hs_auth.verify(hs(claims(channels=["room:*"], publish=["room:1"], info={"name": "A"})), NOW)
    assert isinstance(p, Principal)
    assert p.user == "alice" and p.exp == EXP and p.info == {"name": "A"}
    assert p.channels.patterns == ("room:*",) and p.publish.patterns == ("room:1",)


def test_a_token_is_expired_when_exp_is_reached(hs_auth: Authenticator) -> None:
    """exp <= now is expired; one second before it is still valid."""
    token = hs(claims())
    assert hs_auth.verify(token, EXP - 1).user == "alice"
    _rejected(hs_auth, token, EXP)
    _rejected(hs_auth, token, EXP + 100)


def test_a_token_before_its_nbf_is_rejected(hs_auth: Authenticator) -> None:
    """nbf in the future is rejected; at nbf the token is valid."""
    token = hs(claims(nbf=int(NOW) + 10))
    _rejected(hs_auth, token)
    assert hs_auth.verify(token, NOW + 10).user == "alice"


def test_a_token_issued_far_in_the_future_is_rejected(hs_auth: Authenticator) -> None:
    """iat well after now (beyond clock skew) is rejected."""
    _rejected(hs_auth, hs(claims(iat=int(NOW) + 3600)))
    assert hs_auth.verify(hs(claims(iat=int(NOW) - 5)), NOW).user == "alice"


@pytest.mark.parametrize("exp", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_a_token_whose_exp_is_not_a_finite_number_is_rejected(hs_auth: Authenticator, exp: float) -> None:
    """exp must be a finite NumericDate: Infinity or NaN (legal in Python's JSON) never validates."""
    _rejected(hs_auth, hs(claims(exp=exp)))


def test_numeric_claims_beyond_float_range_are_judged_not_crashed(hs_auth: Authenticator) -> None:
    """exp = 10**400 is no finite NumericDate and nbf/iat = 10**400 are never reached: Unauthorized, not OverflowError."""
    assert str(_rejected(hs_auth, hs(claims(exp=10**400)))) == "token expired"
    assert str(_rejected(hs_auth, hs(claims(nbf=10**400)))) == "token not yet valid"
    assert str(_rejected(hs_auth, hs(claims(iat=10**400)))) == "token issued in the future"
    assert hs_auth.verify(hs(claims(nbf=-(10**400), iat=-(10**400))), NOW).user == "alice"


def test_a_token_with_the_wrong_secret_or_a_tampered_payload_is_rejected(hs_auth: Authenticator) -> None:
    """The signature is checked."""
    _rejected(hs_auth, hs(claims(), secret="w" * 32))
    h, _, sig = hs(claims()).split(".")
    forged = b64(json.dumps(claims(sub="mallory")).encode())
    _rejected(hs_auth, f"{h}.{forged}.{sig}")


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "x" * 9000], ids=["empty", "word", "dots", "two", "huge"])
def test_malformed_or_oversized_tokens_are_rejected(hs_auth: Authenticator, token: str) -> None:
    """Anything that is not a JWT of at most 8 KiB is Unauthorized."""
    _rejected(hs_auth, token)


def test_an_alg_none_token_is_rejected(hs_auth: Authenticator) -> None:
    """`alg: none` is never accepted, signed or not."""
    _rejected(hs_auth, jwt.encode(claims(), None, algorithm="none"))
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    _rejected(hs_auth, f"{header}.{body}.")
    header = b64(json.dumps({"alg": "None"}).encode())
    _rejected(hs_auth, f"{header}.{body}.")


def test_a_token_of_another_algorithm_is_rejected_by_an_hs256_authenticator(
    hs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    """An RS256 token is refused when HS256 is configured."""
    _rejected(hs_auth, jwt.encode(claims(), rsa_key, algorithm="RS256"))
    _rejected(hs_auth, jwt.encode(claims(), SECRET, algorithm="HS512"))


def test_missing_sub_or_exp_is_rejected(hs_auth: Authenticator) -> None:
    """sub and exp are required claims."""
    _rejected(hs_auth, hs({"exp": EXP}))
    _rejected(hs_auth, hs({"sub": "alice"}))


@pytest.mark.parametrize("sub", ["", "bob smith", "bob#1", "\u00e9mile", "a\nb", "x" * 201, 42, ["a"]], ids=repr)
def test_a_sub_unusable_in_a_channel_name_is_rejected(hs_auth: Authenticator, sub: Any) -> None:
    """sub must be 1-200 characters allowed in channel names (it becomes `user:<sub>`)."""
    _rejected(hs_auth, hs(claims(sub=sub)))


def test_a_sub_with_every_allowed_punctuation_is_accepted(hs_auth: Authenticator) -> None:
    """`_-:.@/=` and 200 characters are fine in sub."""
    assert hs_auth.verify(hs(claims(sub="a_b-c:d.e@f/g=h")), NOW).user == "a_b-c:d.e@f/g=h"
    assert hs_auth.verify(hs(claims(sub="x" * 200)), NOW).user == "x" * 200


@pytest.mark.parametrize(
    "extra",
    [
        {"channels": "room:*"},
        {"channels": [1]},
        {"channels": [""]},
        {"publish": {"a": 1}},
        {"info": "x"},
        {"info": [1]},
    ],
    ids=repr,
)
def test_malformed_permission_claims_are_rejected(hs_auth: Authenticator, extra: dict[str, Any]) -> None:
    """channels/publish must be lists of non-empty strings; info an object."""
    _rejected(hs_auth, hs(claims(**extra)))


# --- audience and issuer --------------------------------------------------------------------


def test_aud_and_iss_are_checked_when_configured() -> None:
    """With audience and issuer configured, tokens must carry matching aud and iss."""
    auth = Authenticator(JwtConfig(secret=SECRET, audience="herald", issuer="https://idp.example"))
    good = claims(aud="herald", iss="https://idp.example")
    assert auth.verify(hs(good), NOW).user == "alice"
    assert auth.verify(hs({**good, "aud": ["other", "herald"]}), NOW).user == "alice"
    _rejected(auth, hs(claims(iss="https://idp.example")))
    _rejected(auth, hs(claims(aud="herald")))
    _rejected(auth, hs({**good, "aud": "other"}))
    _rejected(auth, hs({**good, "iss": "https://evil.example"}))


def test_aud_and_iss_are_ignored_when_not_configured(hs_auth: Authenticator) -> None:
    """Without configuration, any aud/iss is accepted."""
    assert hs_auth.verify(hs(claims(aud="whatever", iss="anyone")), NOW).user == "alice"


# --- RS256 / ES256 ------------------------------------------------------------------------------


def test_rs256_tokens_verify_against_a_pem_public_key(
    rs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    """A token signed by the matching private key is valid; another key's is not."""
    assert rs_auth.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"), NOW).user == "alice"
    _rejected(rs_auth, jwt.encode(claims(), rsa_key_2, algorithm="RS256"))


def test_an_hs256_token_is_rejected_by_an_rs256_authenticator(rs_auth: Authenticator) -> None:
    """An algorithm other than the configured one is refused."""
    _rejected(rs_auth, hs(claims()))
    _rejected(rs_auth, jwt.encode(claims(), None, algorithm="none"))


def test_the_key_confusion_attack_is_rejected(rs_auth: Authenticator, rsa_pem_file: Path) -> None:
    """An HS256 token whose HMAC secret is the RS256 public key PEM does not verify."""
    pem = rsa_pem_file.read_bytes()
    _rejected(rs_auth, forge_hs256(claims(), pem))
    _rejected(rs_auth, forge_hs256(claims(), pem.strip()))


def test_es256_tokens_verify_against_a_pem_public_key(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    """ES256 with a PEM public key accepts its own tokens and rejects RS256 ones."""
    path = tmp_path / "ec.pem"
    path.write_bytes(_pem_public(ec_key))
    auth = Authenticator(JwtConfig(algorithm="ES256", public_key_file=str(path)))
    assert auth.verify(jwt.encode(claims(), ec_key, algorithm="ES256"), NOW).user == "alice"
    _rejected(auth, jwt.encode(claims(), rsa_key, algorithm="RS256"))
    _rejected(auth, hs(claims()))


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def test_a_jwks_file_selects_the_key_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_key_2: rsa.RSAPrivateKey
) -> None:
    """With two keys, each token is checked with the key its `kid` names; unknown or swapped kids fail."""
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk(rsa_key, "one"), _jwk(rsa_key_2, "two")]}))
    auth = Authenticator(JwtConfig(algorithm="RS256", jwks_file=str(path)))
    assert auth.verify(jwt.encode(claims(sub="a"), rsa_key, algorithm="RS256", headers={"kid": "one"}), NOW).user == "a"
    assert (
        auth.verify(jwt.encode(claims(sub="b"), rsa_key_2, algorithm="RS256", headers={"kid": "two"}), NOW).user == "b"
    )
    _rejected(auth, jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "two"}))
    _rejected(auth, jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "three"}))
    _rejected(auth, jwt.encode(claims(), rsa_key, algorithm="RS256"))


def test_authenticator_configuration_errors() -> None:
    """HS256 without a secret, or RS256 without a key file, is a ConfigError; so is an unknown algorithm."""
    with pytest.raises(ConfigError):
        Authenticator(JwtConfig())
    with pytest.raises(ConfigError):
        Authenticator(JwtConfig(algorithm="RS256"))
    with pytest.raises(ConfigError):
        JwtConfig(algorithm="none")  # type: ignore[arg-type]


# --- permissions ------------------------------------------------------------------------------


def test_channels_claim_globs_grant_subscriptions(hs_auth: Authenticator) -> None:
    """`room:*` matches every room channel and nothing else; exact names match themselves."""
    p = hs_auth.verify(hs(claims(channels=["room:*", "lobby", "ch?t"])), NOW)
    assert p.may_subscribe("room:1") and p.may_subscribe("room:a/b.c")
    assert p.may_subscribe("lobby") and p.may_subscribe("chat")
    assert not p.may_subscribe("rooms:1") and not p.may_subscribe("lobby2") and not p.may_subscribe("news:1")


def test_publish_claim_globs_grant_publishing(hs_auth: Authenticator) -> None:
    """`publish` patterns govern may_publish; without the claim nothing may be published."""
    p = hs_auth.verify(hs(claims(channels=["*"], publish=["room:*"])), NOW)
    assert p.may_publish("room:1") and not p.may_publish("news:1")
    bare = hs_auth.verify(hs(claims()), NOW)
    assert not bare.may_publish("room:1") and not bare.may_subscribe("room:1")


def test_the_personal_channel_is_the_users_alone(hs_auth: Authenticator) -> None:
    """may_subscribe('user:<self>') is True without any claim; another user's is False even with '*'."""
    p = hs_auth.verify(hs(claims(channels=["*", "user:*", "user:bob"])), NOW)
    assert p.may_subscribe("user:alice")
    assert not p.may_subscribe("user:bob") and not p.may_subscribe("user:alice2") and not p.may_subscribe("user:")
    assert hs_auth.verify(hs(claims()), NOW).may_subscribe("user:alice")


# --- fuzz ---------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
_claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.sampled_from(["alice", "bob", ""]) | _json,
        "exp": st.sampled_from([EXP, int(NOW) - 1]) | _json,
        "nbf": _json,
        "iat": _json,
        "aud": _json,
        "iss": _json,
        "channels": st.lists(st.text(max_size=12), max_size=4) | _json,
        "publish": st.lists(st.text(max_size=12), max_size=4) | _json,
        "info": _json,
    },
)
_headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "none", "RS256"]) | _json}, optional={"kid": _json, "typ": _json, "crit": _json}
)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200) | st.builds(lambda h, c: forge_hs256(c, SECRET.encode(), h), _headers, _claims))
def test_verify_raises_only_unauthorized_on_any_token(token: str) -> None:
    """Arbitrary strings and correctly signed tokens with arbitrary headers/claims give a Principal or Unauthorized."""
    auth = Authenticator(JwtConfig(secret=SECRET))
    try:
        p = auth.verify(token, NOW)
    except Unauthorized:
        return
    assert isinstance(p.user, str) and p.exp > NOW
    p.may_subscribe("room:1")
    p.may_publish("room:1")


def test_a_session_survives_a_refresh_token_with_an_infinite_exp() -> None:
    """A validly signed token with exp=Infinity neither crashes receive() nor refreshes the session."""
    s = make_session()
    drain(s)
    send(s, {"type": "refresh", "token": hs(claims(exp=float("inf"))), "id": 1})
    [reply] = drain(s)
    assert reply["type"] == "error"
    assert s.state is State.OPEN


def test_herald_namespace_is_never_client_published_and_needs_an_explicit_pattern(hs_auth: Authenticator) -> None:
    wide = hs_auth.verify(hs(claims(channels=["*"], publish=["*"])), NOW)
    assert wide.may_subscribe("room:lobby") and wide.may_publish("room:lobby")
    assert not wide.may_subscribe("herald:cluster")  # `*` does not grant Herald's own channels
    assert not wide.may_publish("herald:cluster")
    named = hs_auth.verify(hs(claims(channels=["herald:cluster", "room:*"], publish=["herald:*"])), NOW)
    assert named.may_subscribe("herald:cluster") and named.may_subscribe("room:a")
    assert not named.may_publish("herald:cluster")  # not even with a pattern naming it


# --- time claims are NumericDates (RFC 7519 §4.1.4-6; issue 16) ------------------------------

_NOT_NUMBERS = [str(int(NOW) + 3600), "abc", "", True, None, [1], {"t": 1}]


def _time_claim_cases() -> list[tuple[str, Any]]:
    return [
        (name, value)
        for name in ("nbf", "iat", "exp")
        for value in _NOT_NUMBERS
        if not (name == "exp" and value is None)
    ]


@pytest.mark.parametrize(("name", "value"), _time_claim_cases())
def test_a_time_claim_that_is_not_a_number_is_refused_on_the_hs256_fast_path(
    hs_auth: Authenticator, name: str, value: Any
) -> None:
    _rejected(hs_auth, hs({**claims(), name: value}))


@pytest.mark.parametrize(("name", "value"), _time_claim_cases())
def test_a_time_claim_that_is_not_a_number_is_refused_through_pyjwt(name: str, value: Any) -> None:
    auth = Authenticator(JwtConfig(secret=SECRET, audience="herald"))  # aud: no fast path
    _rejected(auth, hs({**claims(aud="herald"), name: value}))


@pytest.mark.parametrize(("name", "value"), _time_claim_cases())
def test_a_time_claim_that_is_not_a_number_is_refused_on_rs256(
    rs_auth: Authenticator, rsa_key: rsa.RSAPrivateKey, name: str, value: Any
) -> None:
    _rejected(rs_auth, jwt.encode({**claims(), name: value}, rsa_key, algorithm="RS256"))


def test_numeric_time_claims_in_the_past_are_accepted(hs_auth: Authenticator) -> None:
    assert hs_auth.verify(hs(claims(nbf=int(NOW) - 10, iat=NOW - 10.5)), NOW).user == "alice"


def test_a_nan_nbf_is_refused_through_pyjwt() -> None:
    """json (PyJWT's parser) reads NaN; a NaN compares false with every time, so it must be refused."""
    auth = Authenticator(JwtConfig(secret=SECRET))
    payload = json.dumps({"sub": "alice", "exp": EXP, "nbf": float("nan")}).encode()
    _rejected(auth, _forge_raw(payload))


def _forge_raw(payload: bytes) -> str:
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(payload)
    sig = hmac.new(SECRET.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"
