"""The node's edge (node/edge.py) and its WebSocket connections (node/ws.py) against a real
`herald dev` process, at the byte level: what reaches /ws is upgraded there, everything else is
still served by aiohttp on the same port; frames are read however they are cut into TCP writes;
protocol errors, client closes and floods get RFC 6455 / CONTRACT §5 answers; and every kind of
close gives its connection back (the `herald_connections` gauge returns to where it was).

Clients are hand-written (RawWs from test_bad_input.py plus the frame builder of the unit tests),
so that they can misbehave: split request lines, pipeline frames behind the handshake, fragment
messages, skip masking, stop reading.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from herald.core.protocol.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT
from tests.conftest import make_token, seconds
from tests.e2e.server import HeraldProcess
from tests.e2e.test_bad_input import (
    RawWs,
    api,
    assert_error_body,
    assert_pong,
    get_metric,
    publish,
    request,
    serve,
    settled,
    sse_expect_stream,
    sse_open,
    uid,
    wait_for,
    wait_metric,
    watching,
    ws_client,
)
from tests.e2e.test_limits import _rss_kib
from tests.unit.test_wsreader import client_frame

GAUGE = "herald_connections"
SLOW = "herald_slow_consumers_total"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: How long a hang-up may take once the close handshake is complete (node/ws.py aborts after 5 s).
PROMPT = 2.0


@pytest.fixture(scope="module")
def edge_node() -> Iterator[HeraldProcess]:
    """`herald dev` with default options."""
    server = serve()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def flood_node() -> Iterator[HeraldProcess]:
    """A node whose per-connection rate limit is out of the way, for bursts of thousands of messages."""
    server = serve("--client-rate", "1000000", "--client-burst", "1000000")
    yield server
    server.stop()


# ==============================================================================================
# Helpers: raw HTTP and raw upgrades
# ==============================================================================================


def upgrade_request(
    server: HeraldProcess,
    *,
    token: str | None = None,
    path: str = "/ws",
    headers: Mapping[str, str | None] | None = None,
) -> tuple[bytes, str]:
    """(the bytes of an upgrade request, its Sec-WebSocket-Key); a None header value leaves it out."""
    key = base64.b64encode(os.urandom(16)).decode()
    hdrs: dict[str, str | None] = {
        "Host": f"127.0.0.1:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "herald.json",
    }
    hdrs.update(headers or {})
    target = path + (f"?token={token}" if token else "")
    lines = [f"GET {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in hdrs.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


async def connect(
    server: HeraldProcess, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if rcvbuf is None:
        return await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 20)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    return await asyncio.open_connection(sock=sock, limit=16 * 1024)


async def write_pieces(writer: asyncio.StreamWriter, pieces: list[bytes]) -> None:
    """Each piece in its own TCP write. The short pause between pieces only shapes the segments the
    server reads (asyncio sets TCP_NODELAY); no outcome is waited for with it."""
    for i, piece in enumerate(pieces):
        writer.write(piece)
        await writer.drain()
        if i < len(pieces) - 1:
            await asyncio.sleep(0.02)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ")[1]), headers, body


async def raw_upgrade(server: HeraldProcess, pieces: list[bytes], key: str, *, rcvbuf: int | None = None) -> RawWs:
    """Send `pieces` (an upgrade request, possibly cut up and followed by frames), check the 101."""
    async with asyncio.timeout(seconds(10)):
        reader, writer = await connect(server, rcvbuf=rcvbuf)
        await write_pieces(writer, pieces)
        status, headers, _ = await read_response(reader)
    assert status == 101, (status, headers)
    assert headers["sec-websocket-accept"] == base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    return RawWs(reader, writer)


async def open_raw(server: HeraldProcess, user: str | None = None, *, rcvbuf: int | None = None) -> RawWs:
    """A RawWs that has read its `connected` frame."""
    data, key = upgrade_request(server, token=make_token(user or f"raw-{uid()}"))
    ws = await raw_upgrade(server, [data], key, rcvbuf=rcvbuf)
    assert (await next_json(ws))["type"] == "connected"
    return ws


async def refused(server: HeraldProcess, data: bytes) -> tuple[int, dict[str, str], Any]:
    """A refused upgrade: (status, headers, JSON body); the server then closes the connection."""
    async with asyncio.timeout(seconds(10)):
        reader, writer = await connect(server)
        try:
            writer.write(data)
            status, headers, body = await read_response(reader)
            assert await reader.read() == b"", "nothing may follow a refusal"  # and the server hangs up
        finally:
            writer.close()
    return status, headers, json.loads(body)


async def next_frame(ws: RawWs, timeout: float = 5.0) -> tuple[int, bytes]:
    async with asyncio.timeout(seconds(timeout)):
        frame = await ws.read_frame()
    assert frame is not None, "the server closed the connection"
    return frame


async def next_json(ws: RawWs, timeout: float = 5.0) -> Any:
    """The next text frame as JSON (pings skipped)."""
    while True:
        op, payload = await next_frame(ws, timeout)
        if op == OP_TEXT:
            return json.loads(payload)
        assert op == OP_PING, (op, payload)


async def reply_to(ws: RawWs, cmd_id: int, timeout: float = 5.0) -> Any:
    while True:
        obj = await next_json(ws, timeout)
        if obj.get("id") == cmd_id:
            return obj


async def close_frame_then_eof(
    ws: RawWs, *, before_answer: bytes = b"", timeout: float = 10.0
) -> tuple[int | None, float]:
    """Read to the server's close frame, answer it (as RFC 6455 §5.5.1 asks; `before_answer` goes
    out in the same write), then read to EOF: (the server's close code, seconds from the answer to
    EOF)."""
    code = None
    async with asyncio.timeout(seconds(timeout)):
        while True:
            frame = await ws.read_frame()
            assert frame is not None, "EOF without a close frame"
            op, payload = frame
            if op == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                break
        ws.writer.write(before_answer + client_frame(OP_CLOSE, payload[:2]))
        answered = time.monotonic()
        while (frame := await ws.read_frame()) is not None:
            assert frame[0] != OP_CLOSE, "a second close frame"
    return code, time.monotonic() - answered


async def gauge(server: HeraldProcess) -> float:
    return await get_metric(server, GAUGE, transport="ws")


async def gauge_is(server: HeraldProcess, value: float, timeout: float = 10.0) -> None:
    async def reached() -> bool:
        return await gauge(server) == value

    await wait_for(reached, timeout, interval=0.05, message=f"{GAUGE}{{transport=ws}} never returned to {value}")


# ==============================================================================================
# Everything that is not a WebSocket upgrade is still served on the same port
# ==============================================================================================


async def test_plain_http_endpoints_are_served_through_the_edge(edge_node: HeraldProcess) -> None:
    status, body = await api(edge_node, "GET", "/healthz", key=None)
    assert status == 200, body
    status, body = await api(edge_node, "GET", "/metrics", key=None)
    assert status == 200 and f"# TYPE {GAUGE} gauge" in body, body
    channel = f"room:edge-{uid()}"
    status, body = await api(edge_node, "POST", "/api/publish", {"channel": channel, "data": "via api"})
    assert status == 200 and body["channel"] == channel, body
    resp = await sse_open(edge_node, f"?channel={channel}&token={make_token(f'sse-{uid()}')}")
    try:
        await sse_expect_stream(resp)
        marker = uid()
        await publish(edge_node, channel, marker)
        await resp.read_stream_until(marker.encode())
    finally:
        await resp.close()


async def test_a_plain_get_ws_without_upgrade_is_400_json(edge_node: HeraldProcess) -> None:
    for headers in ({}, {"Upgrade": "websocket"}, {"Connection": "Upgrade"}):
        status, body = await api(edge_node, "GET", f"/ws?token={make_token('u')}", key=None, headers=headers)
        assert status == 400, (headers, body)
        assert_error_body(body)


@pytest.mark.parametrize(
    "cut",
    [[2, 6], [7], [7, 8], [1, 2, 3, 4, 5, 6, 7], [30, 60, 90], [-4, -2]],
    ids=["GE|T /w|s?", "GET /ws|?", "GET /ws|?|t", "byte-by-byte-request-line", "inside-headers", "inside-final-crlf"],
)
async def test_an_upgrade_cut_into_several_tcp_writes_still_upgrades(edge_node: HeraldProcess, cut: list[int]) -> None:
    data, key = upgrade_request(edge_node, token=make_token(f"split-{uid()}"))
    bounds = [0, *[c % len(data) for c in cut], len(data)]
    ws = await raw_upgrade(edge_node, [data[a:b] for a, b in zip(bounds, bounds[1:])], key)
    try:
        assert (await next_json(ws))["type"] == "connected"
        ws.send_json({"type": "ping", "id": 7})
        assert await reply_to(ws, 7) == {"type": "pong", "id": 7}
    finally:
        await ws.close()


@pytest.mark.parametrize("path", ["/wsx", "/ws/", "/ws2", "/w", "/WS"])
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "split-after-GET-/ws"])
async def test_a_path_that_only_looks_like_ws_is_not_upgraded(edge_node: HeraldProcess, path: str, split: bool) -> None:
    data, _ = upgrade_request(
        edge_node, token=make_token(f"u-{uid()}"), path=path, headers={"Connection": "Upgrade, close"}
    )
    async with asyncio.timeout(seconds(10)):
        reader, writer = await connect(edge_node)
        try:
            await write_pieces(writer, [data[:7], data[7:]] if split else [data])
            status, _, body = await read_response(reader)
        finally:
            writer.close()
    assert status == 404, (path, status, body)
    assert_error_body(json.loads(body))


@pytest.mark.parametrize("writes", [1, 2])
async def test_an_upgrade_with_a_head_over_16_kib_is_refused_however_it_arrives(
    edge_node: HeraldProcess, writes: int
) -> None:
    """MAX_HEAD (and aiohttp's 8190-byte line limit) bound the request head: the same oversized
    upgrade must not be refused when it arrives in two writes and accepted when it arrives in one."""
    data, _ = upgrade_request(edge_node, token=make_token(f"big-{uid()}"), headers={"X-Big": "a" * 20_000})
    async with asyncio.timeout(seconds(10)):
        reader, writer = await connect(edge_node)
        try:
            await write_pieces(writer, [data] if writes == 1 else [data[:17_000], data[17_000:]])
            status, _, body = await read_response(reader)
        finally:
            writer.close()
    assert 400 <= status < 500, (status, body[:200])


async def test_keep_alive_answers_two_pipelined_requests_in_one_write(edge_node: HeraldProcess) -> None:
    one = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{edge_node.port}\r\n\r\n".encode()
    async with asyncio.timeout(seconds(10)):
        reader, writer = await connect(edge_node)
        try:
            writer.write(one + one)
            first = await read_response(reader)
            second = await read_response(reader)
            # and a third on the same connection once those are answered
            body = json.dumps({"channel": f"room:ka-{uid()}", "data": 1}).encode()
            writer.write(
                f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey dev-key\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            third = await read_response(reader)
        finally:
            writer.close()
    assert first[0] == second[0] == 200, (first, second)
    assert json.loads(first[2]) == json.loads(second[2]) == {"status": "ok"}
    assert third[0] == 200 and "offset" in json.loads(third[2]), third


# ==============================================================================================
# Frames however they are cut
# ==============================================================================================


async def test_a_subscribe_sent_in_the_same_write_as_the_handshake_is_answered(edge_node: HeraldProcess) -> None:
    channel = f"room:early-{uid()}"
    data, key = upgrade_request(edge_node, token=make_token(f"early-{uid()}"))
    frames = client_frame(
        OP_TEXT, json.dumps({"type": "subscribe", "channel": channel, "id": 1}).encode()
    ) + client_frame(OP_TEXT, json.dumps({"type": "ping", "id": 2}).encode())
    ws = await raw_upgrade(edge_node, [data + frames], key)
    try:
        assert (await next_json(ws))["type"] == "connected"
        got = await next_json(ws)
        assert got["type"] == "subscribed" and got["channel"] == channel and got["id"] == 1, got
        assert await reply_to(ws, 2) == {"type": "pong", "id": 2}
        await publish(edge_node, channel, "live")
        while (got := await next_json(ws))["type"] != "message":
            assert got["type"] == "join", got  # presence events of the channel
        assert got["data"] == "live", got
    finally:
        await ws.close()


@pytest.mark.parametrize("separate_writes", [False, True])
async def test_a_fragmented_subscribe_with_a_ping_inside_is_answered(
    edge_node: HeraldProcess, separate_writes: bool
) -> None:
    channel = f"room:frag-{uid()}"
    raw = json.dumps({"type": "subscribe", "channel": channel, "id": 3}).encode()
    ping_payload = os.urandom(16)
    frames = [
        client_frame(OP_TEXT, raw[:10], fin=False),
        client_frame(OP_CONT, raw[10:20], fin=False),
        client_frame(OP_PING, ping_payload),
        client_frame(OP_CONT, raw[20:]),
    ]
    ws = await open_raw(edge_node)
    try:
        await write_pieces(ws.writer, frames if separate_writes else [b"".join(frames)])
        op, payload = await next_frame(ws)
        assert (op, payload) == (OP_PONG, ping_payload), "the ping is answered with its own payload"
        got = await next_json(ws)
        assert got["type"] == "subscribed" and got["channel"] == channel and got["id"] == 3, got
    finally:
        await ws.close()


async def test_a_non_ascii_text_message_cut_inside_a_character_is_read(edge_node: HeraldProcess) -> None:
    channel = f"room:utf-{uid()}"
    msg = {"type": "publish", "channel": channel, "data": "héllo €", "id": 4}
    raw = json.dumps(msg, ensure_ascii=False).encode()
    cut = raw.index("€".encode()) + 1
    ws = await open_raw(edge_node)
    try:
        await write_pieces(ws.writer, [client_frame(OP_TEXT, raw[:cut], fin=False), client_frame(OP_CONT, raw[cut:])])
        assert (await reply_to(ws, 4))["type"] == "published"
    finally:
        await ws.close()
    _status, body = await api(edge_node, "GET", f"/api/history/{channel}")
    assert [m["data"] for m in body["messages"]] == ["héllo €"], body


# ==============================================================================================
# Protocol errors and closes
# ==============================================================================================

_OVER = 64 * 1024 + 1
PROTOCOL_ERRORS: dict[str, tuple[bytes, int]] = {
    "oversized": (client_frame(OP_TEXT, b"x" * _OVER), 1009),
    "oversized-fragments": (
        client_frame(OP_TEXT, b"x" * 40_000, fin=False) + client_frame(OP_CONT, b"y" * 40_000),
        1009,
    ),
    "oversized-header-only": (client_frame(OP_BINARY, b"", length=1 << 40)[:-4], 1009),
    "unmasked": (client_frame(OP_TEXT, b'{"type":"ping","id":1}', masked=False), 1002),
    "reserved-bits": (client_frame(OP_TEXT, b'{"type":"ping","id":1}', rsv=4), 1002),
    "unknown-opcode": (client_frame(0x3, b"x"), 1002),
    "fragmented-ping": (client_frame(OP_PING, b"x", fin=False), 1002),
    "continuation-first": (client_frame(OP_CONT, b"x"), 1002),
    "invalid-utf8": (client_frame(OP_TEXT, b'{"type":"ping","data":"\xff"}'), 1007),
    "bad-close-code": (client_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002),
}


@pytest.mark.parametrize("kind", list(PROTOCOL_ERRORS))
async def test_a_protocol_error_closes_the_connection_with_its_code(edge_node: HeraldProcess, kind: str) -> None:
    data, code = PROTOCOL_ERRORS[kind]
    async with watching(edge_node) as w:
        ws = await open_raw(edge_node)
        try:
            ws.writer.write(data)
            got, _ = await close_frame_then_eof(ws)
        finally:
            await ws.close()
        assert got == code, f"{kind}: close code {got}, expected {code}"
        await w.alive()


@pytest.mark.parametrize(
    "kind,rest", [("oversized", 500), ("oversized-fragments", 500), ("unmasked", 0), ("invalid-utf8", 0)]
)
async def test_after_a_protocol_error_the_server_hangs_up_without_waiting_for_the_close_timeout(
    edge_node: HeraldProcess, kind: str, rest: int
) -> None:
    """RFC 6455 §7.1.7: a protocol error fails the connection. A client that answers the close
    frame must see the TCP connection end promptly, not after node/ws.py's 5 s abort. That holds
    too when the last `rest` bytes of an oversized message were still on their way when the
    server refused its header: they reach the server in the same write as the client's close."""
    data, code = PROTOCOL_ERRORS[kind]
    ws = await open_raw(edge_node)
    try:
        ws.writer.write(data[: len(data) - rest])
        got, hang_up = await close_frame_then_eof(ws, before_answer=data[len(data) - rest :])
    finally:
        await ws.close()
    assert got == code
    assert hang_up < seconds(PROMPT), f"{kind}: TCP closed {hang_up:.1f} s after the client answered the close"


@pytest.mark.parametrize("code,reason", [(4000, b"bye"), (1000, b""), (3001, "é".encode()), (None, b"")])
async def test_a_client_close_is_echoed_and_the_server_hangs_up(
    edge_node: HeraldProcess, code: int | None, reason: bytes
) -> None:
    ws = await open_raw(edge_node)
    try:
        payload = b"" if code is None else struct.pack("!H", code) + reason
        ws.writer.write(client_frame(OP_CLOSE, payload))
        async with asyncio.timeout(seconds(PROMPT)):
            op, echo = await next_frame(ws)
            assert op == OP_CLOSE
            assert int.from_bytes(echo[:2], "big") == (code or 1000), echo
            assert await ws.read_frame() is None, "the server must close TCP after echoing the close"
    finally:
        await ws.close()


async def test_a_server_close_is_completed_by_the_clients_answer(edge_node: HeraldProcess) -> None:
    """/api/disconnect closes with 4003; once the client answers, TCP closes at once."""
    user = f"kicked-{uid()}"
    ws = await open_raw(edge_node, user)
    try:
        status, body = await api(edge_node, "POST", "/api/disconnect", {"user": user, "code": 4003})
        assert status == 200 and body["disconnected"] == 1, body
        code, hang_up = await close_frame_then_eof(ws)
    finally:
        await ws.close()
    assert code == 4003
    assert hang_up < seconds(PROMPT)


async def test_frames_after_the_clients_close_are_ignored(edge_node: HeraldProcess) -> None:
    channel = f"room:after-{uid()}"
    ws = await open_raw(edge_node)
    try:
        late = client_frame(OP_TEXT, json.dumps({"type": "publish", "channel": channel, "data": 1}).encode())
        ws.writer.write(client_frame(OP_CLOSE, struct.pack("!H", 1000)) + late)
        async with asyncio.timeout(seconds(PROMPT)):
            while (frame := await ws.read_frame()) is not None:
                assert frame[0] in (OP_CLOSE, OP_PING), frame
    finally:
        await ws.close()
    _status, body = await api(edge_node, "GET", f"/api/history/{channel}")
    assert body["messages"] == [], "a message after the close frame was run"


# ==============================================================================================
# Refused upgrades: JSON HTTP errors before the 101
# ==============================================================================================


@pytest.mark.parametrize(
    "headers,status,slug",
    [
        ({"Sec-WebSocket-Version": "8"}, 426, None),
        ({"Sec-WebSocket-Key": None}, 400, None),
        ({"Sec-WebSocket-Key": base64.b64encode(b"short").decode()}, 400, None),
        ({"Origin": "http://evil.example"}, 403, "forbidden"),
    ],
    ids=["version-8", "no-key", "short-key", "foreign-origin"],
)
async def test_a_bad_upgrade_is_refused_with_a_json_error(
    edge_node: HeraldProcess, headers: dict[str, str | None], status: int, slug: str | None
) -> None:
    data, _ = upgrade_request(edge_node, token=make_token(f"u-{uid()}"), headers=headers)
    got, hdrs, body = await refused(edge_node, data)
    assert got == status, (got, body)
    assert hdrs["content-type"].startswith("application/json")
    assert_error_body(body)
    if slug is not None:
        assert body["error"]["code"] == slug, body
    if status == 426:
        assert hdrs.get("sec-websocket-version") == "13", hdrs


@pytest.mark.parametrize(
    "token",
    ["garbage", make_token("mallory", secret="wrong-secret"), make_token("late", ttl=-60)],
    ids=["garbage", "forged", "expired"],
)
async def test_a_bad_token_in_the_upgrade_is_401(edge_node: HeraldProcess, token: str) -> None:
    data, _ = upgrade_request(edge_node, token=token)
    status, _hdrs, body = await refused(edge_node, data)
    assert status == 401, body
    assert_error_body(body)
    assert body["error"]["code"] == "unauthorized", body
    # the same token as a cookie or a Bearer header is refused the same way
    for headers in ({"Cookie": f"herald_token={token}"}, {"Authorization": f"Bearer {token}"}):
        data, _ = upgrade_request(edge_node, headers=headers)
        assert (await refused(edge_node, data))[0] == 401


# ==============================================================================================
# Floods and readers that stop reading
# ==============================================================================================


async def test_a_burst_of_5000_messages_is_answered_in_order(flood_node: HeraldProcess) -> None:
    """One TCP write of 5,000 publishes and pings, sent without reading: every one is answered
    once, in order, and another client is served meanwhile."""
    await settled(flood_node, timeout=10)
    channel = f"room:flood-{uid()}"
    n = 5000
    burst = b"".join(
        client_frame(
            OP_TEXT,
            json.dumps(
                {"type": "publish", "channel": channel, "data": i, "id": i} if i % 2 else {"type": "ping", "id": i}
            ).encode(),
        )
        for i in range(1, n + 1)
    )
    async with ws_client(flood_node, f"other-{uid()}") as other:
        ws = await open_raw(flood_node, f"flood-{uid()}")
        try:
            ws.writer.write(burst)
            await assert_pong(other)  # served while the burst is being worked through
            ids: list[int] = []
            async with asyncio.timeout(seconds(60)):
                while len(ids) < n:
                    obj = await next_json(ws, timeout=30)
                    assert obj["type"] == ("published" if obj["id"] % 2 else "pong"), obj
                    ids.append(obj["id"])
            assert ids == list(range(1, n + 1)), "answers out of order, missing or repeated"
            await assert_pong(other)
        finally:
            await ws.close()
    _status, body = await api(flood_node, "GET", f"/api/history/{channel}?limit=1000")
    data = [m["data"] for m in body["messages"]]
    assert data == sorted(data) and data[-1] == n - 1, "publishes were not run in order"


def history_flood(channel: str) -> bytes:
    """One write: 100 publishes of 8 KB to `channel`, then 300 `history` requests for it (~240 MB
    of replies if they were all buffered). The 300 requests reach the node in one read, so it
    queues more than 64 messages and stops reading this client."""
    big = "h" * 8000
    publishes = [{"type": "publish", "channel": channel, "data": big, "id": i} for i in range(1, 101)]
    histories = [{"type": "history", "channel": channel, "id": i} for i in range(1000, 1300)]
    return b"".join(client_frame(OP_TEXT, json.dumps(m).encode()) for m in publishes + histories)


async def test_a_client_that_never_reads_is_closed_4008_with_bounded_memory(flood_node: HeraldProcess) -> None:
    """CONTRACT §5: a send buffer over the limit is a slow consumer (4008). A client asks for
    hundreds of ~800 KB history replies and reads nothing: the node's memory stays bounded, the
    stream ends with the `reconnect` (slow) advisory and close 4008, and others are served."""
    await settled(flood_node, timeout=10)
    channel = f"room:hist-{uid()}"
    before_slow = await get_metric(flood_node, SLOW)
    before_gauge = await gauge(flood_node)
    rss_before = _rss_kib(flood_node.proc.pid)
    async with watching(flood_node) as w:
        ws = await open_raw(flood_node, f"sink-{uid()}", rcvbuf=4096)
        try:
            ws.writer.write(history_flood(channel))
            await wait_metric(flood_node, SLOW, before_slow + 1, "the sink was never found slow", timeout=30)
            assert _rss_kib(flood_node.proc.pid) - rss_before < 64 * 1024, "the node buffered the replies"
            await w.alive()
            # now read: whatever was sent, then the advisory and 4008
            advisory = None
            async with asyncio.timeout(seconds(20)):
                while True:
                    op, payload = await next_frame(ws)
                    if op == OP_TEXT and payload.startswith(b'{"type":"reconnect"'):
                        advisory = json.loads(payload)
                    if op == OP_CLOSE:
                        break
            assert advisory is not None and advisory["reason"] == "slow", advisory
            assert int.from_bytes(payload[:2], "big") == 4008
        finally:
            await ws.close()
        await w.alive()
    await gauge_is(flood_node, before_gauge)


async def test_a_slow_consumer_that_answers_the_close_is_hung_up_on_promptly(flood_node: HeraldProcess) -> None:
    """The close handshake of a 4008 completes when the client answers, even though the node had
    stopped reading that client (more than 64 messages queued) when it decided to close. (A normal
    receive window: the client catches up within milliseconds once it reads, so the time from its
    answer to EOF is not eaten up by the time it took to reach the close frame.)"""
    await settled(flood_node, timeout=10)
    channel = f"room:hist-{uid()}"
    before_slow = await get_metric(flood_node, SLOW)
    ws = await open_raw(flood_node, f"sink-{uid()}")
    try:
        ws.writer.write(history_flood(channel))
        await wait_metric(flood_node, SLOW, before_slow + 1, "the sink was never found slow", timeout=30)
        code, hang_up = await close_frame_then_eof(ws)
    finally:
        await ws.close()
    assert code == 4008
    assert hang_up < seconds(PROMPT), f"TCP closed {hang_up:.1f} s after the client answered the 4008 close"


# ==============================================================================================
# Nothing leaks: the connections gauge returns after every kind of close
# ==============================================================================================


async def _abort(ws: RawWs) -> None:
    ws.writer.transport.abort()


async def _half_close(ws: RawWs) -> None:
    ws.writer.write_eof()
    async with asyncio.timeout(seconds(10)):
        while await ws.read_frame() is not None:
            pass


async def _protocol_error(ws: RawWs) -> None:
    ws.writer.write(PROTOCOL_ERRORS["unmasked"][0])
    assert (await close_frame_then_eof(ws))[0] == 1002


async def _oversized(ws: RawWs) -> None:
    ws.writer.write(PROTOCOL_ERRORS["oversized"][0])
    assert (await close_frame_then_eof(ws))[0] == 1009


async def _client_close(ws: RawWs) -> None:
    ws.writer.write(client_frame(OP_CLOSE, struct.pack("!H", 4000)))
    async with asyncio.timeout(seconds(10)):
        while await ws.read_frame() is not None:
            pass


CLOSE_KINDS = {
    "tcp-reset": _abort,
    "tcp-eof": _half_close,
    "protocol-error": _protocol_error,
    "oversized": _oversized,
    "client-close": _client_close,
}


@pytest.mark.parametrize(
    "kind", [*CLOSE_KINDS, "server-disconnect", "websockets-close", "reset-right-after-upgrade", "refused-401"]
)
async def test_the_connections_gauge_returns_after_each_kind_of_close(edge_node: HeraldProcess, kind: str) -> None:
    await settled(edge_node, timeout=10)
    before = await gauge(edge_node)
    user = f"g-{uid()}"
    if kind in CLOSE_KINDS:
        ws = await open_raw(edge_node, user)
        try:
            assert await gauge(edge_node) == before + 1
            await CLOSE_KINDS[kind](ws)
        finally:
            await ws.close()
    elif kind == "server-disconnect":
        ws = await open_raw(edge_node, user)
        try:
            assert await gauge(edge_node) == before + 1
            await api(edge_node, "POST", "/api/disconnect", {"user": user, "code": 4003})
            assert (await close_frame_then_eof(ws))[0] == 4003
        finally:
            await ws.close()
    elif kind == "websockets-close":
        async with ws_client(edge_node, user) as conn:
            assert await gauge(edge_node) == before + 1
            got = await request(conn, {"type": "subscribe", "channel": f"room:{uid()}", "id": 1})
            assert got["type"] == "subscribed"
    elif kind == "reset-right-after-upgrade":  # gone before the node has even admitted it
        data, _key = upgrade_request(edge_node, token=make_token(user))
        subscribe = client_frame(OP_TEXT, json.dumps({"type": "subscribe", "channel": "room:x", "id": 1}).encode())
        _reader, writer = await connect(edge_node)
        writer.write(data + subscribe)
        await writer.drain()
        writer.transport.abort()
    else:
        data, _ = upgrade_request(edge_node, token="garbage")
        assert (await refused(edge_node, data))[0] == 401
        assert await gauge(edge_node) == before
    await gauge_is(edge_node, before)
    await settled(edge_node, timeout=10)


# ==============================================================================================
# Found in review: queued messages before a close, upgrades on reused connections, bursts,
# shutdown, and answers nobody reads
# ==============================================================================================


async def test_a_publish_sent_just_before_the_close_frame_is_published(edge_node: HeraldProcess) -> None:
    """ "Send, then close" in one write: the publish runs and is answered, then the close is echoed."""
    channel = f"room:lastword-{uid()}"
    ws = await open_raw(edge_node)
    try:
        ws.writer.write(
            client_frame(
                OP_TEXT, json.dumps({"type": "publish", "id": 1, "channel": channel, "data": "last words"}).encode()
            )
            + client_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
        )
        reply = await reply_to(ws, 1)
        assert reply["type"] == "published", reply
        op, payload = await next_frame(ws)
        assert op == OP_CLOSE and int.from_bytes(payload[:2], "big") == 1000
    finally:
        await ws.close()
    status, hist = await api(edge_node, "GET", f"/api/history/{channel}")
    assert status == 200 and [m["data"] for m in hist["messages"]] == ["last words"]


async def test_a_publish_sent_just_before_a_hang_up_is_published(edge_node: HeraldProcess) -> None:
    channel = f"room:hangup-{uid()}"
    ws = await open_raw(edge_node)
    ws.writer.write(client_frame(OP_TEXT, json.dumps({"type": "publish", "channel": channel, "data": 1}).encode()))
    ws.writer.write_eof()
    await ws.close()

    async def published() -> bool:
        _, hist = await api(edge_node, "GET", f"/api/history/{channel}")
        return [m["data"] for m in hist["messages"]] == [1]

    await wait_for(published)


async def test_an_upgrade_on_a_reused_keep_alive_connection_is_served(edge_node: HeraldProcess) -> None:
    """Proxies that pool upstream connections send an upgrade after other requests on the same
    connection: aiohttp answers that handshake, and the connection is then a full WebSocket."""
    before = await gauge(edge_node)
    channel = f"room:reused-{uid()}"
    data, key = upgrade_request(edge_node, token=make_token(f"reused-{uid()}"))
    probe = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{edge_node.port}\r\n\r\n".encode()
    async with asyncio.timeout(seconds(10)):
        reader, writer = await connect(edge_node)
        writer.write(probe)
        assert (await read_response(reader))[0] == 200
        writer.write(data)
        status, headers, _ = await read_response(reader)
    assert status == 101, (status, headers)
    assert headers["sec-websocket-accept"] == base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    ws = RawWs(reader, writer)
    try:
        assert (await next_json(ws))["type"] == "connected"
        ws.send_json({"type": "subscribe", "id": 1, "channel": channel})
        assert (await reply_to(ws, 1))["type"] == "subscribed"
        await publish(edge_node, channel, "via aiohttp's handshake")
        got = await next_json(ws)
        while got["type"] == "join":  # room:* announces joins
            got = await next_json(ws)
        assert got["type"] == "message" and got["data"] == "via aiohttp's handshake", got
        ws.writer.write(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        op, _ = await next_frame(ws)
        assert op == OP_CLOSE
    finally:
        await ws.close()
    await gauge_is(edge_node, before)


async def test_a_burst_of_connects_cannot_overshoot_the_per_ip_limit() -> None:
    """Ten upgrades written at once against --max-connections-per-ip 2: two are admitted, the
    others are closed with 1013 — the limit counts a connection from its upgrade on."""
    server = serve("--max-connections-per-ip", "2")
    try:
        conns = []
        for i in range(10):
            data, _key = upgrade_request(server, token=make_token(f"burst-{i}-{uid()}"))
            conns.append(await connect(server))
            conns[-1][1].write(data)
        outcomes = []
        for reader, writer in conns:
            async with asyncio.timeout(seconds(10)):
                status, _, _ = await read_response(reader)
                assert status == 101
                ws = RawWs(reader, writer)
                op, payload = await next_frame(ws)
                outcomes.append(
                    "connected"
                    if op == OP_TEXT and json.loads(payload)["type"] == "connected"
                    else int.from_bytes(payload[:2], "big")
                )
        assert sorted(outcomes, key=str) == [1013] * 8 + ["connected"] * 2, outcomes
        for _, writer in conns:
            writer.close()
    finally:
        server.stop()


async def test_shutdown_cleans_up_clients_that_never_answer_the_close() -> None:
    """--drain-window 0 and a client that never answers its close frame: the node still logs the
    close and cleans the connection up before it stops (not at interpreter exit)."""
    server = serve("--drain-window", "0")
    try:
        ws = await open_raw(server, "mute")
        server.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.to_thread(server.proc.wait), seconds(10))
        finally:
            await ws.close()
    finally:
        server.stop()  # joins the output reader and closes the pipe
    log = server.output()
    assert '"ws.closed"' in log and log.index('"ws.closed"') < log.index('"node.stopped"'), log[-2000:]


async def test_answers_nobody_reads_do_not_pile_up_in_the_server(edge_node: HeraldProcess) -> None:
    """A publisher that pipelines without ever reading its answers is stopped by TCP flow control:
    the server stops reading instead of buffering answers."""
    body = json.dumps({"channel": "room:unread", "data": "x"}).encode()
    one = (
        f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey wrong\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    rss_before = _rss_kib(edge_node.proc.pid)
    _reader, writer = await connect(edge_node, rcvbuf=4096)
    try:
        sent = 0
        with pytest.raises(TimeoutError):  # never completes: the server stopped reading
            async with asyncio.timeout(seconds(3)):
                while sent < 400_000:
                    writer.write(one * 1000)
                    sent += 1000
                    await writer.drain()
        assert sent < 400_000
        assert _rss_kib(edge_node.proc.pid) - rss_before < 32 * 1024
        status, _ = await api(edge_node, "GET", "/healthz")
        assert status == 200
    finally:
        writer.transport.abort()
