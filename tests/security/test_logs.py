"""With `--log-format json` every line a node writes is one JSON object, malformed requests are
one short rate-limited WARNING each, and no token or API key reaches the log, whoever logs
(issue 16, item 3)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import jwt

from tests.conftest import make_token
from tests.e2e.server import start_herald
from tests.security.raw import client_frame, close_writer, connect, read_response, read_until_close, upgrade

SECRET = "s-" + uuid.uuid4().hex  # 34 bytes: no short-secret warning either
API_KEY = "k-" + uuid.uuid4().hex
ROUNDS = 10


def _malformed(token: str) -> list[bytes]:
    """Requests aiohttp's parser refuses, each carrying a credential where it gets quoted."""
    return [
        b"GET /healthz?token=%b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %b\r\nX-Bad: \x01\r\n\r\n"
        % (token.encode(), token.encode()),
        b"GET /api/info HTTP/1.1\r\nHost: x\r\nAuthorization: apikey %b\r\nContent-Length: abc\r\n\r\n"
        % API_KEY.encode(),
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey %b\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n0\r\n\r\n" % API_KEY.encode(),
        b"GET /ws?token=%b HTTP/1.1\nHost: x\nAuthorization: apikey %b\n\n" % (token.encode(), API_KEY.encode()),
        b"GET /events HTTP/1.1\r\nHost: x\r\nCookie: herald_token=%b\r\nX-Bad: a\x00b\r\n\r\n" % token.encode(),
        b"GET /?token=%b&%b HTTP/1.1\r\nHost: x\r\n\r\n" % (token.encode(), b"a" * 9000),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: apikey %b\r\nHost: y\r\n\r\n" % API_KEY.encode(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + token.encode(),  # TLS to an HTTP port
    ]


async def _send(port: int, data: bytes) -> int | None:
    reader, writer = await connect(port)
    try:
        writer.write(data)
        try:
            status, headers, body = await read_response(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        assert headers["content-type"].startswith("application/json"), (data[:40], headers)
        assert json.loads(body)["error"]["code"] in ("bad_request", "not_implemented", "http_error"), body
        assert token_free(body.decode("latin-1"))
        return status
    finally:
        await close_writer(writer)


_TOKEN = ""


def token_free(text: str) -> bool:
    return _TOKEN not in text and _TOKEN.rsplit(".", 1)[-1] not in text and API_KEY not in text


async def test_every_line_is_json_and_no_credential_is_logged_after_malformed_requests() -> None:
    global _TOKEN
    _TOKEN = make_token("mallory", secret=SECRET)
    server = start_herald("--jwt-secret", SECRET, "--api-key", API_KEY, command="node")
    try:
        start = time.monotonic()
        for _ in range(ROUNDS):
            statuses = [await _send(server.port, data) for data in _malformed(_TOKEN)]
            assert all(s is None or 400 <= s < 600 for s in statuses), statuses
        elapsed = time.monotonic() - start
        # a client that did authenticate, with its token in the URL, then broke the protocol
        reader, writer = await upgrade(server.port, _TOKEN)
        writer.write(client_frame(0x1, b"{}", masked=False))
        assert (await read_until_close(reader))[0] == 1002
        await close_writer(writer)
        # a bad token at the upgrade: the refusal is logged, the token is not
        bad = jwt.encode({"sub": "x", "exp": 1}, SECRET, algorithm="HS256")
        reader, writer = await connect(server.port)
        writer.write(
            b"GET /ws?token=%b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % bad.encode()
        )
        assert (await read_response(reader))[0] == 401
        await close_writer(writer)
        server.terminate()
        assert server.wait() == 0
    finally:
        server.stop()
    lines = [line for line in server.output().splitlines() if line.strip()]
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line[:200]!r}") from None
    text = "\n".join(lines)
    assert token_free(text), "a credential reached the log"
    assert bad not in text and "Traceback" not in text
    malformed = [e for e in events if e["event"] == "http.request.malformed"]
    assert malformed and all(e["level"] == "warning" and e["peer"] == "127.0.0.1" for e in malformed)
    assert all(len(json.dumps(e)) < 400 for e in malformed), "a malformed request is one short line"
    sent = ROUNDS * len(_malformed(_TOKEN))
    assert len(malformed) <= 10 + 5 * elapsed + 1 < sent, (len(malformed), sent, elapsed)  # at a bounded rate
