"""Time claims that are not numbers are refused with 401, on the HS256 fast path and through
PyJWT (RS256), at the WebSocket upgrade and on SSE alike (issue 16, item 4; RFC 7519 §4.1.4-6)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.server import HeraldProcess, start_herald
from tests.security.conftest import API_KEY, SECRET
from tests.security.raw import close_writer, connect, read_response, upgrade_head

FUTURE = str(int(time.time()) + 3600)
BAD_CLAIMS = [("nbf", FUTURE), ("nbf", "abc"), ("iat", FUTURE), ("exp", FUTURE), ("exp", "abc"), ("nbf", True)]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rs256_node(tmp_path_factory: pytest.TempPathFactory, rsa_key: rsa.RSAPrivateKey) -> Iterator[HeraldProcess]:
    pem = tmp_path_factory.mktemp("keys") / "public.pem"
    pem.write_bytes(
        rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    server = start_herald(
        "--jwt-algorithm", "RS256", "--jwt-public-key", str(pem), "--api-key", API_KEY, command="node"
    )
    yield server
    server.stop()


def _claims(name: str, value: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 600, "channels": ["news:*"], name: value}


async def _status(server: HeraldProcess, target: str, *, upgrade: bool) -> int:
    reader, writer = await connect(server.port)
    try:
        if upgrade:
            writer.write(upgrade_head(server.port, target))
        else:
            writer.write(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode())
        return (await read_response(reader))[0]
    finally:
        await close_writer(writer)


async def _refused_everywhere(server: HeraldProcess, token: str) -> None:
    assert await _status(server, f"/ws?token={token}", upgrade=True) == 401
    assert await _status(server, f"/events?channel=news:a&token={token}", upgrade=False) == 401


@pytest.mark.parametrize(("name", "value"), BAD_CLAIMS)
async def test_a_non_numeric_time_claim_is_401_on_hs256(default_node: HeraldProcess, name: str, value: Any) -> None:
    await _refused_everywhere(default_node, jwt.encode(_claims(name, value), SECRET, algorithm="HS256"))


@pytest.mark.parametrize(("name", "value"), BAD_CLAIMS)
async def test_a_non_numeric_time_claim_is_401_on_rs256(
    rs256_node: HeraldProcess, rsa_key: rsa.RSAPrivateKey, name: str, value: Any
) -> None:
    await _refused_everywhere(rs256_node, jwt.encode(_claims(name, value), rsa_key, algorithm="RS256"))


async def test_numeric_time_claims_are_still_accepted(
    default_node: HeraldProcess, rs256_node: HeraldProcess, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = int(time.time())
    claims = {**_claims("nbf", now - 5), "iat": now - 5}
    assert (
        await _status(default_node, f"/ws?token={jwt.encode(claims, SECRET, algorithm='HS256')}", upgrade=True) == 101
    )
    assert await _status(rs256_node, f"/ws?token={jwt.encode(claims, rsa_key, algorithm='RS256')}", upgrade=True) == 101
