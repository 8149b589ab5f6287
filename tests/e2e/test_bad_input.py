"""Bad input against a real `herald dev` process: every mistake gets the contract's answer
(CONTRACT.md §2, §3, §5, §7) and the node keeps serving everyone else.

Clients are independent of the server's stack: `websockets` for WebSocket, hand-written HTTP/1.1
over asyncio streams for SSE and raw requests, aiohttp only for plain server-API calls. After each
bad input an already-connected client (the *watcher*) must still receive a message published via
/api/publish.

The helpers at the top are also used by test_limits.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import make_token, seconds
from tests.e2e.clients import close_writer
from tests.e2e.server import HeraldProcess, start_herald

# ==============================================================================================
# Helpers (shared with test_limits.py)
# ==============================================================================================


def uid() -> str:
    return uuid.uuid4().hex[:10]


def serve(*args: str) -> HeraldProcess:
    """start_herald, making sure something keeps reading the process's output.

    A node whose piped stdout/stderr is not read blocks inside a log call once the 64 KiB pipe is
    full. Newer tests/e2e/server.py drains it itself (`HeraldProcess.reader`); with an older one,
    a thread of ours does, so a module-scoped node survives many connections either way.
    """
    server = start_herald(*args)
    if getattr(server, "reader", None) is None:

        def drain() -> None:
            try:
                assert server.proc.stdout is not None
                for line in server.proc.stdout:
                    server.log_lines.append(line)
            except Exception:  # the pipe is closed by HeraldProcess.stop()
                pass

        threading.Thread(target=drain, name=f"herald-log-{server.port}", daemon=True).start()
    return server


# --- WebSocket (websockets library) ----------------------------------------------------------


def ws_url(server: HeraldProcess, token: str | None = None) -> str:
    return server.ws + (f"?token={token}" if token else "")


async def ws_open(server: HeraldProcess, token: str | None = None, **kw: Any) -> ClientConnection:
    """A websockets connection (no proxy, no compression, no client pings), bounded."""
    opts: dict[str, Any] = {
        "proxy": None,
        "compression": None,
        "ping_interval": None,
        "open_timeout": seconds(5),
        "close_timeout": seconds(2),
    }
    opts.update(kw)
    async with asyncio.timeout(seconds(10)):
        return await connect(ws_url(server, token), **opts)


@asynccontextmanager
async def ws_client(
    server: HeraldProcess,
    user: str | None = None,
    *,
    token: str | None = None,
    expect_connected: bool = True,
    **kw: Any,
) -> AsyncIterator[ClientConnection]:
    """A connected client; with `expect_connected` the `connected` frame is read and checked."""
    if token is None and user is not None:
        token = make_token(user)
    ws = await ws_open(server, token, **kw)
    try:
        if expect_connected:
            hello = await recv_obj(ws)
            assert hello["type"] == "connected", hello
            if user is not None:
                assert hello["user"] == user
        yield ws
    finally:
        await ws.close()


def decode_frame(raw: str | bytes) -> Any:
    return msgpack.unpackb(raw, raw=False) if isinstance(raw, bytes) else json.loads(raw)


async def recv_obj(ws: ClientConnection, timeout: float = 5.0) -> Any:
    async with asyncio.timeout(seconds(timeout)):
        return decode_frame(await ws.recv())


async def send_obj(ws: ClientConnection, obj: Any) -> None:
    if ws.subprotocol == "herald.msgpack":
        await ws.send(msgpack.packb(obj, use_bin_type=True))
    else:
        await ws.send(json.dumps(obj))


async def recv_until(ws: ClientConnection, pred: Any, timeout: float = 5.0) -> Any:
    """Read frames until one satisfies `pred` (others are skipped); bounded."""
    async with asyncio.timeout(seconds(timeout)):
        while True:
            obj = decode_frame(await ws.recv())
            if pred(obj):
                return obj


async def reply(ws: ClientConnection, cmd_id: int, timeout: float = 5.0) -> Any:
    return await recv_until(ws, lambda o: isinstance(o, dict) and o.get("id") == cmd_id, timeout)


async def request(ws: ClientConnection, obj: dict[str, Any], timeout: float = 5.0) -> Any:
    """Send a command with an `id` and return the reply carrying that id."""
    await send_obj(ws, obj)
    return await reply(ws, obj["id"], timeout)


async def assert_pong(ws: ClientConnection) -> None:
    """The connection is open and answering: a ping gets its pong."""
    cmd_id = int.from_bytes(os.urandom(3), "big")
    got = await request(ws, {"type": "ping", "id": cmd_id})
    assert got == {"type": "pong", "id": cmd_id}


def assert_error(obj: Any, code: int, cmd_id: int | None = None) -> None:
    assert isinstance(obj, dict) and obj.get("type") == "error", obj
    assert obj["code"] == code, obj
    assert isinstance(obj.get("message"), str) and obj["message"], obj
    if cmd_id is None:
        assert "id" not in obj, obj
    else:
        assert obj["id"] == cmd_id, obj


async def closed_code(ws: ClientConnection, timeout: float = 5.0, seen: list[Any] | None = None) -> int | None:
    """Read frames (into `seen`, if given) until the server closes; the close code it sent (None: no
    close frame)."""
    async with asyncio.timeout(seconds(timeout)):
        try:
            while True:
                raw = await ws.recv()
                if seen is not None:
                    seen.append(decode_frame(raw))
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None


async def refused_after_upgrade(ws: ClientConnection) -> int | None:
    """The close code of a connection refused right after the upgrade, checking it never got `connected`."""
    seen: list[Any] = []
    code = await closed_code(ws, seen=seen)
    assert not [f for f in seen if isinstance(f, dict) and f.get("type") == "connected"], seen
    return code


async def ws_refused(server: HeraldProcess, token: str | None = None, **kw: Any) -> InvalidStatus:
    """Open a WebSocket that must be refused before the upgrade; the InvalidStatus."""
    with pytest.raises(InvalidStatus) as info:
        ws = await ws_open(server, token, **kw)
        await ws.close()
    return info.value


def response_json(exc: InvalidStatus) -> Any:
    return json.loads(exc.response.body or b"null")


# --- plain HTTP --------------------------------------------------------------------------------

_NO_BODY = object()


async def api(
    server: HeraldProcess,
    method: str,
    path: str,
    body: Any = _NO_BODY,
    *,
    raw: bytes | None = None,
    key: str | None = "dev-key",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One server-API call with aiohttp; (status, parsed JSON or text)."""
    hdrs = {} if key is None else {"Authorization": f"apikey {key}"}
    hdrs.update(headers or {})
    kw: dict[str, Any] = {}
    if raw is not None:
        kw["data"] = raw
        hdrs.setdefault("Content-Type", "application/json")
    elif body is not _NO_BODY:
        kw["json"] = body
    async with asyncio.timeout(seconds(10)):
        async with aiohttp.ClientSession() as http:
            async with http.request(method, server.http + path, headers=hdrs, **kw) as resp:
                status, text = resp.status, await resp.text()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def assert_error_body(body: Any) -> None:
    """The contract's HTTP error body: {"error":{"code":"<slug>","message":"..."}}."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict), body
    assert isinstance(err.get("code"), str) and err["code"], body
    assert isinstance(err.get("message"), str) and err["message"], body


async def publish(server: HeraldProcess, channel: str, data: Any) -> dict[str, Any]:
    status, body = await api(server, "POST", "/api/publish", {"channel": channel, "data": data})
    assert status == 200, body
    return body


async def metrics_text(server: HeraldProcess) -> str:
    async with asyncio.timeout(seconds(10)):
        async with aiohttp.ClientSession() as http, http.get(server.http + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name and dict(_LABEL.findall(m.group(2) or "")) == labels:
            return float(m.group(3))
    return 0.0


async def get_metric(server: HeraldProcess, name: str, **labels: str) -> float:
    return metric(await metrics_text(server), name, **labels)


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02, message: str = "") -> None:
    """Poll an async predicate until true; bounded (AssertionError with `message` on timeout)."""
    try:
        async with asyncio.timeout(seconds(timeout)):
            while not await predicate():
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(message or f"not true within {seconds(timeout)} s: {predicate}") from None


async def wait_metric(
    server: HeraldProcess, name: str, at_least: float, message: str = "", timeout: float = 3.0, **labels: str
) -> None:
    """Wait until a counter reaches `at_least` (counters are updated as connections finish closing)."""
    last = [0.0]

    async def reached() -> bool:
        last[0] = await get_metric(server, name, **labels)
        return last[0] >= at_least

    try:
        await wait_for(reached, timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(
            f"{message + ': ' if message else ''}{name}{labels} is {last[0]}, expected >= {at_least}"
        ) from None


async def settled(server: HeraldProcess, timeout: float = 5.0) -> None:
    """Wait until the node has released every connection of earlier tests (readyz count is 0)."""

    async def idle() -> bool:
        status, body = await api(server, "GET", "/readyz", key=None)
        return status == 200 and body.get("connections") == 0

    await wait_for(idle, timeout)


# --- raw HTTP/1.1 (SSE and requests aiohttp would not send) -------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    _buf: bytes = b""

    async def body(self) -> bytes:
        async with asyncio.timeout(seconds(5)):
            if "content-length" in self.headers:
                return await self.reader.readexactly(int(self.headers["content-length"]))
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                out = b""
                while (chunk := await self._chunk()) is not None:
                    out += chunk
                return out
            return await self.reader.read()

    async def json(self) -> Any:
        return json.loads(await self.body())

    async def _chunk(self) -> bytes | None:
        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return None
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def read_stream_until(self, needle: bytes, timeout: float = 5.0) -> bytes:
        """Read a chunked event stream until `needle` appears; everything read so far."""
        async with asyncio.timeout(seconds(timeout)):
            while needle not in self._buf:
                chunk = await self._chunk()
                if chunk is None:
                    raise AssertionError(f"stream ended before {needle!r}: {self._buf!r}")
                self._buf += chunk
        return self._buf

    async def close(self) -> None:
        await close_writer(self.writer)


async def raw_request(
    server: HeraldProcess,
    target: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    local_addr: tuple[str, int] | None = None,
    rcvbuf: int | None = None,
) -> RawResponse:
    """Send one hand-written HTTP/1.1 request and parse the status line and headers.

    With `rcvbuf` the socket gets a small receive window and the reader stops pulling from the
    socket at 32 KiB buffered: a client that does not read really stops reading."""
    async with asyncio.timeout(seconds(10)):
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, local_addr=local_addr, limit=1 << 20
            )
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
                reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
            except BaseException:
                sock.close()
                raise
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})", status_line)
    assert m, status_line
    hdrs = {}
    for line in header_lines:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return RawResponse(int(m.group(1)), hdrs, reader, writer)


async def sse_open(
    server: HeraldProcess,
    query: str = "",
    headers: dict[str, str] | None = None,
    local_addr: tuple[str, int] | None = None,
    rcvbuf: int | None = None,
) -> RawResponse:
    return await raw_request(
        server,
        "/events" + query,
        headers={"Accept": "text/event-stream", **(headers or {})},
        local_addr=local_addr,
        rcvbuf=rcvbuf,
    )


async def sse_expect_stream(resp: RawResponse) -> None:
    """A 200 event stream with the contract's headers and its `retry:` opening."""
    assert resp.status == 200, (resp.status, await resp.body())
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers.get("cache-control") == "no-cache"
    assert resp.headers.get("x-accel-buffering") == "no"
    opening = await resp.read_stream_until(b"\n\n")
    assert opening.startswith(b"retry: "), opening


async def sse_expect_error(resp: RawResponse, status: int) -> None:
    try:
        got = await resp.body()
        assert resp.status == status, (resp.status, got)
        assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
        assert_error_body(json.loads(got))
    finally:
        await resp.close()


# --- raw WebSocket client (for clients that misbehave at the frame level) -----------------------

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawWs:
    """A hand-made RFC 6455 client over asyncio streams: it reads only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: HeraldProcess, token: str, *, rcvbuf: int | None = None) -> RawWs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(seconds(10)):
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
                # a small StreamReader limit: asyncio stops reading the socket at 2 * limit buffered
                reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
                key = base64.b64encode(os.urandom(16))
                writer.write(
                    f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.json\r\n\r\n".encode()
                )
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status, *lines = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
            assert status.startswith("HTTP/1.1 101"), head
            accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
            assert headers.get("sec-websocket-accept") == accept, head
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    def send_json(self, obj: Any) -> None:
        self.send(0x1, json.dumps(obj).encode())

    async def read_frame(self) -> tuple[int, bytes] | None:
        """The next (opcode, payload), or None at EOF / reset."""
        try:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b0 & 0x0F, await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def close(self) -> None:
        await close_writer(self.writer)


# --- the watcher: proof that the node keeps serving everyone else --------------------------------


class Watcher:
    def __init__(self, server: HeraldProcess, ws: ClientConnection, channel: str) -> None:
        self.server, self.ws, self.channel = server, ws, channel

    async def alive(self) -> None:
        """A message published via /api/publish now reaches this already-connected client."""
        marker = uid()
        await publish(self.server, self.channel, {"marker": marker})
        got = await recv_until(self.ws, lambda o: o.get("type") == "message" and o.get("data") == {"marker": marker})
        assert got["channel"] == self.channel


@asynccontextmanager
async def watching(server: HeraldProcess, **kw: Any) -> AsyncIterator[Watcher]:
    """An independent client, connected and subscribed before the bad input happens."""
    user = f"watcher-{uid()}"
    channel = f"room:watch-{uid()}"
    async with ws_client(server, user, **kw) as ws:
        got = await request(ws, {"type": "subscribe", "channel": channel, "id": 1})
        assert got["type"] == "subscribed", got
        yield Watcher(server, ws, channel)


# --- tokens ------------------------------------------------------------------------------------


def _b64url(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(user: str, **extra: Any) -> dict[str, Any]:
    return {"sub": user, "exp": int(time.time() + 600), "channels": ["room:*"], "publish": ["room:*"], **extra}


def bad_token(kind: str) -> str:
    user = f"mallory-{uid()}"
    if kind == "forged":
        return make_token(user, secret="not-the-dev-secret")
    if kind == "expired":
        return make_token(user, ttl=-30)
    if kind == "alg-none":
        return f"{_b64url({'alg': 'none', 'typ': 'JWT'})}.{_b64url(_claims(user))}."
    if kind == "es256":
        return jwt.encode(_claims(user), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    if kind == "rs256":
        return jwt.encode(
            _claims(user), rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256"
        )
    if kind == "hs512-right-secret":  # the right key, but not the configured algorithm
        return jwt.encode(_claims(user), "dev-secret", algorithm="HS512")
    if kind == "missing-sub":
        claims = _claims(user)
        del claims["sub"]
        return jwt.encode(claims, "dev-secret", algorithm="HS256")
    if kind == "missing-exp":
        claims = _claims(user)
        del claims["exp"]
        return jwt.encode(claims, "dev-secret", algorithm="HS256")
    if kind == "not-yet-valid":
        return make_token(user, nbf=int(time.time() + 600))
    if kind == "garbage":
        return "not.a.jwt"
    raise ValueError(kind)


BAD_TOKENS = [
    "forged",
    "expired",
    "alg-none",
    "es256",
    "rs256",
    "hs512-right-secret",
    "missing-sub",
    "missing-exp",
    "not-yet-valid",
    "garbage",
]

# ==============================================================================================
# Fixtures
# ==============================================================================================


@pytest.fixture(scope="module")
def node() -> Iterator[HeraldProcess]:
    """`herald dev` with default options, shared by this module."""
    server = serve()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tuned() -> Iterator[HeraldProcess]:
    """A node with a short auth timeout and an origin allow-list."""
    server = serve("--auth-timeout", str(seconds(1)), "--allowed-origins", "http://app.example")
    yield server
    server.stop()


@pytest.fixture
async def watcher(node: HeraldProcess) -> AsyncIterator[Watcher]:
    async with watching(node) as w:
        yield w


# ==============================================================================================
# WebSocket protocol errors: an error reply, the connection stays open
# ==============================================================================================


async def test_ws_malformed_json_gets_400_and_connection_stays_open(node: HeraldProcess, watcher: Watcher) -> None:
    async with ws_client(node, f"u-{uid()}") as ws:
        for junk in ['{"type": "ping"', "not json at all", '{"type":"ping"}}', "\x00", " "]:
            await ws.send(junk)
            assert_error(await recv_until(ws, lambda o: o.get("type") == "error"), 400)
        await assert_pong(ws)
    await watcher.alive()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "bogus", "id": 7},
        {"type": "PING", "id": 8},
        {"id": 9},
        {"type": None, "id": 10},
        {"type": ["ping"], "id": 11},
        {"type": "x" * 10_000, "id": 12},
    ],
    ids=["unknown", "wrong-case", "no-type", "null-type", "list-type", "huge-type"],
)
async def test_ws_unknown_type_gets_400_with_id_echoed(
    node: HeraldProcess, watcher: Watcher, message: dict[str, Any]
) -> None:
    async with ws_client(node, f"u-{uid()}") as ws:
        await send_obj(ws, message)
        assert_error(await reply(ws, message["id"]), 400, message["id"])
        await assert_pong(ws)
    await watcher.alive()


@pytest.mark.parametrize(
    "payload",
    [
        "[1, 2]",
        '"ping"',
        "42",
        "null",
        '{"type":"ping","id":"7"}',
        '{"type":"ping","id":-1}',
        '{"type":"ping","id":1.5}',
    ],
    ids=["array", "string", "number", "null", "string-id", "negative-id", "float-id"],
)
async def test_ws_non_object_or_bad_id_gets_400(node: HeraldProcess, watcher: Watcher, payload: str) -> None:
    async with ws_client(node, f"u-{uid()}") as ws:
        await ws.send(payload)
        err = await recv_until(ws, lambda o: isinstance(o, dict) and o.get("type") in ("error", "pong"))
        assert err["type"] == "error" and err["code"] == 400, err
        await assert_pong(ws)
    await watcher.alive()


@pytest.mark.parametrize(
    "channel",
    ["room 1", "room:" + "x" * 251, "room#1", "", "room:caf\u00e9", "room\n1", "room:a,b", 42, None, ["room:1"]],
    ids=["space", "256-chars", "hash", "empty", "non-ascii", "newline", "comma", "number", "null", "list"],
)
async def test_ws_subscribe_invalid_channel_gets_400(node: HeraldProcess, watcher: Watcher, channel: Any) -> None:
    async with ws_client(node, f"u-{uid()}") as ws:
        got = await request(ws, {"type": "subscribe", "channel": channel, "id": 21})
        assert_error(got, 400, 21)
        # the same mistake in other commands
        got = await request(ws, {"type": "publish", "channel": channel, "data": 1, "id": 22})
        assert_error(got, 400, 22)
        got = await request(ws, {"type": "history", "channel": channel, "id": 23})
        assert_error(got, 400, 23)
        await assert_pong(ws)
    await watcher.alive()


async def test_ws_channel_name_of_255_chars_is_valid(node: HeraldProcess, watcher: Watcher) -> None:
    channel = "room:" + "x" * 250
    assert len(channel) == 255
    async with ws_client(node, f"u-{uid()}") as ws:
        got = await request(ws, {"type": "subscribe", "channel": channel, "id": 3})
        assert got["type"] == "subscribed" and got["channel"] == channel, got
    await watcher.alive()


@pytest.mark.parametrize(
    "channel", ["secret:plans", "news", "roomx:1"], ids=["other-namespace", "no-namespace", "prefix-lookalike"]
)
async def test_ws_subscribe_forbidden_channel_gets_403(node: HeraldProcess, watcher: Watcher, channel: str) -> None:
    async with ws_client(node, f"u-{uid()}") as ws:
        got = await request(ws, {"type": "subscribe", "channel": channel, "id": 31})
        assert_error(got, 403, 31)
        await assert_pong(ws)
        # nothing published there reaches this connection
        await publish(node, channel, "private")
        await assert_pong(ws)
    await watcher.alive()


async def test_ws_subscribe_to_another_users_personal_channel_gets_403(node: HeraldProcess, watcher: Watcher) -> None:
    alice, bob = f"alice-{uid()}", f"bob-{uid()}"
    # even a token whose `channels` claim matches everything cannot open someone else's personal channel
    async with ws_client(node, alice, token=make_token(alice, channels=["*"])) as ws:
        got = await request(ws, {"type": "subscribe", "channel": f"user:{bob}", "id": 41})
        assert_error(got, 403, 41)
        got = await request(ws, {"type": "unsubscribe", "channel": f"user:{alice}", "id": 42})
        assert_error(got, 403, 42)
        await assert_pong(ws)
    await watcher.alive()


async def test_ws_publish_without_permission_gets_403(node: HeraldProcess, watcher: Watcher) -> None:
    user = f"u-{uid()}"
    async with ws_client(node, user, token=make_token(user, channels=["news:*"], publish=["room:*"])) as ws:
        got = await request(ws, {"type": "publish", "channel": "news:x", "data": 1, "id": 51})
        assert_error(got, 403, 51)
        await assert_pong(ws)
    status, body = await api(node, "GET", "/api/history/news:x")
    assert status == 200 and body["messages"] == [], body
    await watcher.alive()


async def test_ws_binary_frame_on_json_subprotocol_gets_400(node: HeraldProcess, watcher: Watcher) -> None:
    async with ws_client(node, f"u-{uid()}", subprotocols=["herald.json"]) as ws:
        assert ws.subprotocol == "herald.json"
        await ws.send(json.dumps({"type": "ping", "id": 1}).encode())  # bytes: a binary frame
        raw = await asyncio.wait_for(ws.recv(), seconds(5))
        assert isinstance(raw, str), "herald.json replies in text frames"
        assert_error(json.loads(raw), 400)
        await assert_pong(ws)
    await watcher.alive()


async def test_ws_msgpack_subprotocol_works_and_text_frames_get_400(node: HeraldProcess, watcher: Watcher) -> None:
    user = f"u-{uid()}"
    channel = f"room:mp-{uid()}"
    async with ws_client(node, token=make_token(user), subprotocols=["herald.msgpack"], expect_connected=False) as ws:
        assert ws.subprotocol == "herald.msgpack"
        raw = await asyncio.wait_for(ws.recv(), seconds(5))
        assert isinstance(raw, bytes), "herald.msgpack uses binary frames"
        hello = msgpack.unpackb(raw, raw=False)
        assert hello["type"] == "connected" and hello["user"] == user, hello
        assert hello["channels"] == [f"user:{user}"]
        await assert_pong(ws)
        got = await request(ws, {"type": "subscribe", "channel": channel, "id": 2})
        assert got["type"] == "subscribed", got
        await publish(node, channel, {"n": 1, "bin": "ok"})
        msg = await recv_until(ws, lambda o: o.get("type") == "message")
        assert msg["channel"] == channel and msg["data"] == {"n": 1, "bin": "ok"}

        await ws.send('{"type":"ping","id":3}')  # a text frame on herald.msgpack
        raw = await asyncio.wait_for(ws.recv(), seconds(5))
        assert isinstance(raw, bytes)
        assert_error(msgpack.unpackb(raw, raw=False), 400)

        await ws.send(b"\xc1")  # 0xc1 is never valid msgpack
        assert_error(await recv_until(ws, lambda o: o.get("type") == "error"), 400)
        await ws.send(msgpack.packb([1, 2, 3]))
        assert_error(await recv_until(ws, lambda o: o.get("type") == "error"), 400)
        await assert_pong(ws)
    await watcher.alive()


async def test_ws_invalid_utf8_text_frame_closes_with_1007(node: HeraldProcess, watcher: Watcher) -> None:
    async with ws_client(node, f"u-{uid()}") as ws:
        await ws.send(b"\xff\xfe", text=True)  # a text frame whose payload is not UTF-8
        assert await closed_code(ws) == 1007
    await watcher.alive()


async def test_ws_oversized_frame_closes_with_1009(node: HeraldProcess, watcher: Watcher) -> None:
    async with ws_client(node, f"u-{uid()}") as ws:
        # a frame a little under the 64 KiB default is fine
        data = "x" * (64 * 1024 - 200)
        got = await request(ws, {"type": "publish", "channel": f"room:big-{uid()}", "data": data, "id": 1})
        assert got["type"] == "published", got
        await ws.send(json.dumps({"type": "publish", "channel": "room:big", "data": "x" * (65 * 1024)}))
        assert await closed_code(ws) == 1009
    await watcher.alive()


# ==============================================================================================
# Tokens
# ==============================================================================================


@pytest.mark.parametrize("kind", BAD_TOKENS)
async def test_bad_token_is_refused_with_401_on_ws_and_sse(node: HeraldProcess, watcher: Watcher, kind: str) -> None:
    token = bad_token(kind)
    refused = await ws_refused(node, token)
    assert refused.response.status_code == 401
    assert_error_body(response_json(refused))

    resp = await sse_open(node, f"?channel=room:1&token={token}")
    await sse_expect_error(resp, 401)
    await watcher.alive()


async def test_bad_token_in_header_or_cookie_is_refused(node: HeraldProcess, watcher: Watcher) -> None:
    token = bad_token("forged")
    refused = await ws_refused(node, additional_headers={"Authorization": f"Bearer {token}"})
    assert refused.response.status_code == 401
    refused = await ws_refused(node, additional_headers={"Cookie": f"herald_token={token}"})
    assert refused.response.status_code == 401
    await sse_expect_error(await sse_open(node, headers={"Authorization": f"Bearer {token}"}), 401)
    await sse_expect_error(await sse_open(node, headers={"Cookie": f"herald_token={token}"}), 401)
    await watcher.alive()


async def test_sse_without_token_is_401(node: HeraldProcess, watcher: Watcher) -> None:
    await sse_expect_error(await sse_open(node, "?channel=room:1"), 401)
    await watcher.alive()


async def test_ws_token_via_bearer_header_and_cookie(node: HeraldProcess, watcher: Watcher) -> None:
    user = f"u-{uid()}"
    token = make_token(user)
    async with ws_client(node, user, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await assert_pong(ws)
    async with ws_client(node, user, additional_headers={"Cookie": f"herald_token={token}"}) as ws:
        await assert_pong(ws)

    for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"herald_token={token}"}):
        resp = await sse_open(node, "?channel=room:1", headers=headers)
        try:
            await sse_expect_stream(resp)
        finally:
            await resp.close()
    await watcher.alive()


async def test_ws_first_message_auth_yields_connected(node: HeraldProcess, watcher: Watcher) -> None:
    user = f"u-{uid()}"
    channel = f"room:fm-{uid()}"
    async with ws_client(node, expect_connected=False) as ws:
        await send_obj(ws, {"type": "auth", "token": make_token(user)})
        hello = await recv_obj(ws)
        assert hello["type"] == "connected" and hello["user"] == user, hello
        assert hello["channels"] == [f"user:{user}"]
        got = await request(ws, {"type": "subscribe", "channel": channel, "id": 1})
        assert got["type"] == "subscribed"
        await publish(node, channel, "hi")
        assert (await recv_until(ws, lambda o: o.get("type") == "message"))["data"] == "hi"
        # a second auth is a protocol error, not a new identity
        got = await request(ws, {"type": "auth", "token": make_token(f"other-{uid()}"), "id": 2})
        assert_error(got, 400, 2)
        await assert_pong(ws)
    await watcher.alive()


@pytest.mark.parametrize(
    "first", ["forged", "expired", "alg-none", "missing-sub", "not-auth", "not-json", "empty-token"]
)
async def test_ws_failed_first_message_auth_closes_4001(node: HeraldProcess, watcher: Watcher, first: str) -> None:
    async with ws_client(node, expect_connected=False) as ws:
        if first == "not-auth":
            await send_obj(ws, {"type": "ping", "id": 1})
        elif first == "not-json":
            await ws.send("{oops")
        elif first == "empty-token":
            await send_obj(ws, {"type": "auth", "token": ""})
        else:
            await send_obj(ws, {"type": "auth", "token": bad_token(first)})
        assert await closed_code(ws) == 4001
    await watcher.alive()


async def test_ws_without_any_auth_is_closed_4001_after_auth_timeout(tuned: HeraldProcess) -> None:
    async with watching(tuned) as w:
        async with ws_client(tuned, expect_connected=False) as ws:  # no token: the upgrade succeeds
            started = time.monotonic()
            assert await closed_code(ws, timeout=4) == 4001
            assert time.monotonic() - started >= 0.5 * seconds(1), "closed long before the auth timeout"
        # a late auth message does not resurrect anything, and the node still serves
        async with ws_client(tuned, expect_connected=False) as ws:
            await send_obj(ws, {"type": "auth", "token": make_token(f"u-{uid()}")})
            assert (await recv_obj(ws))["type"] == "connected"
        await w.alive()


# ==============================================================================================
# Server HTTP API
# ==============================================================================================


@pytest.mark.parametrize(
    "auth",
    [None, "apikey wrong-key", "apikey ", "Bearer dev-key", "dev-key", "apikey dev-key-and-more"],
    ids=["missing", "wrong", "empty", "wrong-scheme", "no-scheme", "longer"],
)
async def test_api_key_missing_or_wrong_is_401(node: HeraldProcess, watcher: Watcher, auth: str | None) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    for method, path, body in [
        ("POST", "/api/publish", {"channel": "room:x", "data": 1}),
        ("GET", "/api/history/room:x", _NO_BODY),
        ("GET", "/api/info", _NO_BODY),
        ("POST", "/api/disconnect", {"user": "x"}),
        ("POST", "/notify", {"userId": "x", "message": "m"}),
    ]:
        status, got = await api(node, method, path, body, key=None, headers=headers)
        assert status == 401, (path, got)
        assert_error_body(got)
    status, got = await api(node, "GET", "/api/history/room:x")
    assert status == 200 and got["messages"] == [], "a refused publish must not publish"
    await watcher.alive()


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b"", b'{"channel":"room:x","data":1}}', b"\xff\xfe"],
    ids=["truncated", "text", "empty", "trailing", "not-utf8"],
)
async def test_api_malformed_json_is_400(node: HeraldProcess, watcher: Watcher, raw: bytes) -> None:
    for path in ("/api/publish", "/api/broadcast", "/api/disconnect", "/notify"):
        status, got = await api(node, "POST", path, raw=raw)
        assert status == 400, (path, got)
        assert_error_body(got)
    await watcher.alive()


@pytest.mark.parametrize(
    "body",
    [[{"channel": "room:x", "data": 1}], "room:x", 42, None, True],
    ids=["array", "string", "number", "null", "bool"],
)
async def test_api_body_not_an_object_is_400(node: HeraldProcess, watcher: Watcher, body: Any) -> None:
    for path in ("/api/publish", "/api/broadcast", "/api/disconnect", "/notify"):
        status, got = await api(node, "POST", path, raw=json.dumps(body).encode())
        assert status == 400, (path, got)
        assert_error_body(got)
    await watcher.alive()


@pytest.mark.parametrize(
    "body",
    [
        {"channel": "room 1", "data": 1},
        {"channel": "room:" + "x" * 251, "data": 1},
        {"channel": "", "data": 1},
        {"channel": 5, "data": 1},
        {"data": 1},
        {"channel": "room:x"},
        {"channel": "room:x", "data": 1, "event": ""},
        {"channel": "room:x", "data": 1, "event": "e" * 65},
        {"channel": "room:x", "data": 1, "event": "a\nb"},
        {"channel": "room:x", "data": 1, "idempotency_key": "k" * 257},
        {"channel": "room:x", "data": 1, "idempotency_key": 7},
    ],
    ids=[
        "space",
        "256-chars",
        "empty-channel",
        "number-channel",
        "no-channel",
        "no-data",
        "empty-event",
        "long-event",
        "newline-event",
        "long-idempotency-key",
        "number-idempotency-key",
    ],
)
async def test_api_publish_bad_fields_are_400(node: HeraldProcess, watcher: Watcher, body: dict[str, Any]) -> None:
    status, got = await api(node, "POST", "/api/publish", body)
    assert status == 400, got
    assert_error_body(got)
    status, got = await api(node, "GET", "/api/history/room:x")
    assert status == 200 and got["messages"] == [], "nothing may be published by a refused request"
    await watcher.alive()


async def test_api_broadcast_with_one_bad_channel_publishes_nothing(node: HeraldProcess, watcher: Watcher) -> None:
    good = f"room:bc-{uid()}"
    for body in (
        {"channels": [good, "bad channel"], "data": 1},
        {"channels": [], "data": 1},
        {"channels": good, "data": 1},
        {"channels": [good]},
    ):
        status, got = await api(node, "POST", "/api/broadcast", body)
        assert status == 400, (body, got)
        assert_error_body(got)
    status, got = await api(node, "GET", f"/api/history/{good}")
    assert status == 200 and got["messages"] == [], got
    await watcher.alive()


async def test_api_notify_bad_fields_are_400(node: HeraldProcess, watcher: Watcher) -> None:
    for body in (
        {"message": "m"},
        {"userId": "", "message": "m"},
        {"userId": "a b", "message": "m"},
        {"userId": "bob"},
        {"userId": 5, "message": "m"},
    ):
        status, got = await api(node, "POST", "/notify", body)
        assert status == 400, (body, got)
        assert_error_body(got)
    await watcher.alive()


async def test_api_body_over_64k_is_413(node: HeraldProcess, watcher: Watcher) -> None:
    channel = f"room:big-{uid()}"
    near = json.dumps({"channel": channel, "data": "x" * (64 * 1024 - 100)}).encode()
    assert len(near) <= 64 * 1024
    status, got = await api(node, "POST", "/api/publish", raw=near)
    assert status == 200, got
    over = json.dumps({"channel": channel, "data": "x" * (64 * 1024)}).encode()
    status, got = await api(node, "POST", "/api/publish", raw=over)
    assert status == 413, got
    assert_error_body(got)
    status, got = await api(node, "GET", f"/api/history/{channel}")
    assert len(got["messages"]) == 1, "the oversized body must not be published"
    await watcher.alive()


async def _post_in_pieces(server: HeraldProcess, pieces: list[bytes], *, chunked: bool) -> tuple[int, Any]:
    """POST /api/publish with the body written in separate TCP writes (a slow or chunking client)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        body = b"".join(pieces)
        head = (
            "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: apikey dev-key\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n"
        )
        head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n"
        writer.write((head + "\r\n").encode())
        await writer.drain()
        async with asyncio.timeout(seconds(10)):
            for piece in pieces:
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                await asyncio.sleep(0.05)  # let the server see each piece on its own
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            resp = await reader.read()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    head_bytes, _, payload = resp.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ")[1])
    if b"transfer-encoding: chunked" in head_bytes.lower():
        out, rest = b"", payload
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        payload = out
    return status, json.loads(payload)


async def test_api_body_arriving_in_pieces_is_read_whole(node: HeraldProcess, watcher: Watcher) -> None:
    """A valid body under the limit that arrives in several TCP segments is not 'malformed'."""
    channel = f"room:pieces-{uid()}"
    body = json.dumps({"channel": channel, "data": "y" * 3000}).encode()
    for chunked in (False, True):
        status, got = await _post_in_pieces(node, [body[:1000], body[1000:2000], body[2000:]], chunked=chunked)
        assert status == 200, (chunked, got)
    await watcher.alive()


async def test_api_chunked_body_over_64k_is_413(node: HeraldProcess, watcher: Watcher) -> None:
    channel = f"room:chunked-{uid()}"
    over = json.dumps({"channel": channel, "data": "x" * (100 * 1024)}).encode()
    status, got = await _post_in_pieces(node, [over[i : i + 16384] for i in range(0, len(over), 16384)], chunked=True)
    assert status == 413, got
    assert_error_body(got)
    # a valid object followed by padding: the whole body is over the limit, nothing is published
    small = json.dumps({"channel": channel, "data": "sneaky"}).encode()
    status, got = await _post_in_pieces(node, [small, b" " * (70 * 1024)], chunked=True)
    assert status == 413, got
    status, got = await api(node, "GET", f"/api/history/{channel}")
    assert got["messages"] == [], got
    await watcher.alive()


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/api/nope"), ("POST", "/api/nope"), ("GET", "/nope"), ("GET", "/api/history/"), ("GET", "/ws/extra")],
)
async def test_unknown_path_is_404_json(node: HeraldProcess, watcher: Watcher, method: str, path: str) -> None:
    status, got = await api(node, method, path, {} if method == "POST" else _NO_BODY)
    assert status == 404, got
    assert_error_body(got)
    await watcher.alive()


@pytest.mark.parametrize("where", ["query", "header"])
async def test_huge_request_line_or_header_is_4xx(node: HeraldProcess, watcher: Watcher, where: str) -> None:
    huge = "1" * (100 * 1024)
    if where == "query":
        resp = await raw_request(
            node,
            f"/api/history/room:x?since={huge}&epoch=e",
            headers={"Authorization": "apikey dev-key", "Connection": "close"},
        )
    else:
        resp = await raw_request(
            node,
            "/api/history/room:x",
            headers={"Authorization": "apikey dev-key", "X-Huge": huge, "Connection": "close"},
        )
    await resp.close()
    assert 400 <= resp.status < 500, resp.status
    status, got = await api(node, "GET", "/healthz", key=None)
    assert status == 200, got
    await watcher.alive()


@pytest.mark.parametrize(
    "query", ["?since=1-0", "?since=nope&epoch=e", "?since=1&epoch=e", "?limit=-1", "?limit=abc", "?limit=1.5"]
)
async def test_api_history_bad_query_is_400(node: HeraldProcess, watcher: Watcher, query: str) -> None:
    status, got = await api(node, "GET", f"/api/history/room:x{query}")
    assert status == 400, got
    assert_error_body(got)
    await watcher.alive()


async def test_api_bad_channel_in_path_is_400(node: HeraldProcess, watcher: Watcher) -> None:
    for path in (
        "/api/history/room%20x",
        "/api/history/room%23x",
        "/api/presence/room%20x",
        "/api/presence/room%20x/stats",
        f"/api/history/room:{'x' * 251}",
    ):
        status, got = await api(node, "GET", path)
        assert status == 400, (path, got)
        assert_error_body(got)
    await watcher.alive()


@pytest.mark.parametrize(
    "body",
    [
        {"user": "bob", "code": 999},
        {"user": "bob", "code": 1001},
        {"user": "bob", "code": 2999},
        {"user": "bob", "code": 5000},
        {"user": "bob", "code": "4003"},
        {"user": "bob", "code": 4003.0},
        {"user": "bob", "code": True},
        {"code": 4003},
        {"user": ""},
        {"user": "bad user"},
    ],
    ids=["999", "1001", "2999", "5000", "string", "float", "bool", "no-user", "empty-user", "bad-user"],
)
async def test_api_disconnect_bad_input_is_400(node: HeraldProcess, watcher: Watcher, body: dict[str, Any]) -> None:
    status, got = await api(node, "POST", "/api/disconnect", body)
    assert status == 400, got
    assert_error_body(got)
    await watcher.alive()


# ==============================================================================================
# Origin allow-list
# ==============================================================================================


async def test_ws_foreign_origin_is_403_before_upgrade(node: HeraldProcess, watcher: Watcher) -> None:
    token = make_token(f"u-{uid()}")
    for origin in ("http://evil.example", "http://app.example", f"http://127.0.0.1:{node.port}.evil.example", "null"):
        refused = await ws_refused(node, token, origin=origin)
        assert refused.response.status_code == 403, origin
        assert_error_body(response_json(refused))
    await watcher.alive()


async def test_ws_same_origin_is_accepted(node: HeraldProcess, watcher: Watcher) -> None:
    user = f"u-{uid()}"
    async with ws_client(node, user, origin=f"http://127.0.0.1:{node.port}") as ws:
        await assert_pong(ws)
    await watcher.alive()


async def test_ws_allowed_origin_is_accepted(tuned: HeraldProcess) -> None:
    async with watching(tuned) as w:
        user = f"u-{uid()}"
        async with ws_client(tuned, user, origin="http://app.example") as ws:
            await assert_pong(ws)
        async with ws_client(tuned, user, origin=f"http://127.0.0.1:{tuned.port}") as ws:
            await assert_pong(ws)
        for origin in ("https://app.example", "http://app.example:8080", "http://evil.example"):
            refused = await ws_refused(tuned, make_token(user), origin=origin)
            assert refused.response.status_code == 403, origin
        await w.alive()
