"""`POST /api/publish` connections served by core/web/fastpath.py: pipelining, the same answers
as the aiohttp route, and hand-off to aiohttp for everything it does not serve itself."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httptools
import pytest

from tests.conftest import seconds
from tests.e2e.clients import WsClient, close_writer
from tests.e2e.server import API_KEY, HeraldProcess, start_herald
from tests.redis_server import start_redis

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def redis_herald() -> Iterator[HeraldProcess]:
    """`herald dev --redis`: publishes go through the Redis engine's per-shard batches."""
    redis = start_redis()
    server = start_herald("--redis", redis.url, "--partitions", "4")
    yield server
    server.stop()
    redis.stop()


@pytest.fixture(params=["memory", "redis"])
def any_engine(request: pytest.FixtureRequest) -> HeraldProcess:
    return request.getfixturevalue("herald" if request.param == "memory" else "redis_herald")


class _Responses:
    """Parses a stream of HTTP/1.1 responses with httptools (an independent parser)."""

    def __init__(self) -> None:
        self.done: list[tuple[int, dict[str, str], bytes]] = []
        self._headers: dict[str, str] = {}
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self._parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.responses = _Responses()

    @classmethod
    async def open(cls, server: HeraldProcess) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()

    async def answers(self, n: int) -> list[tuple[int, dict[str, str], Any]]:
        async with asyncio.timeout(seconds(10)):
            while len(self.responses.done) < n:
                data = await self.reader.read(65536)
                assert data, f"connection closed after {len(self.responses.done)} of {n} answers"
                self.responses.feed(data)
        got, self.responses.done = self.responses.done[:n], self.responses.done[n:]
        return [(status, headers, json.loads(body)) for status, headers, body in got]

    async def closed_by_server(self) -> bool:
        async with asyncio.timeout(seconds(10)):
            return await self.reader.read(1) == b""

    async def close(self) -> None:
        await close_writer(self.writer)


def request(
    path: str,
    body: Any = None,
    *,
    method: str = "POST",
    key: str | None = API_KEY,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> bytes:
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key is not None:
        lines.append(f"Authorization: apikey {key}")
    if "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(payload)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def offset(answer: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(part) for part in answer["offset"].split("-"))


def publish(channel: str, data: Any, **kw: Any) -> bytes:
    return request("/api/publish", {"channel": channel, "data": data}, **kw)


async def test_pipelined_publishes_are_answered_in_order_and_delivered(any_engine: HeraldProcess) -> None:
    """Pipelined publishes start together (one engine batch) yet keep their order per channel;
    channels interleave, and a bad request in the middle fails alone."""
    sub = await WsClient.open(any_engine.ws, "fp-sub")
    channels = ["news:fp-pipe-a", "news:fp-pipe-b", "news:fp-pipe-c"]
    try:
        for ch in channels:
            await sub.request({"type": "subscribe", "channel": ch})
        conn = await Conn.open(any_engine)
        requests = [publish(channels[i % 3], i) for i in range(150)]
        requests[70] = publish("bad channel!", 70)
        await conn.send(b"".join(requests))
        answers = await conn.answers(150)
        assert [status for status, _, _ in answers] == [200] * 70 + [400] + [200] * 79
        for k, ch in enumerate(channels):
            mine = [body for i, (_, _, body) in enumerate(answers) if i % 3 == k and i != 70]
            assert all(body["channel"] == ch for body in mine)
            offsets = [offset(body) for body in mine]
            assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), offsets
        got = await sub.messages(149, timeout=seconds(10))
        for k, ch in enumerate(channels):
            assert [m["data"] for m in got if m["channel"] == ch] == [i for i in range(k, 150, 3) if i != 70]
        await conn.close()
    finally:
        await sub.close()


async def test_a_request_split_into_pieces_is_answered(herald: HeraldProcess) -> None:
    conn = await Conn.open(herald)
    raw = publish("news:fp-split", "x")
    await conn.send(raw[:3], raw[3:17], raw[17:40], raw[40:-2], raw[-2:])
    [(status, _, body)] = await conn.answers(1)
    assert status == 200 and body["channel"] == "news:fp-split"
    await conn.close()


async def test_errors_match_the_contract_and_keep_the_connection(herald: HeraldProcess) -> None:
    conn = await Conn.open(herald)
    await conn.send(
        publish("news:fp-err", 1, key="wrong"),
        request("/api/publish", raw=b"{nope"),
        request("/api/publish", {"channel": "news:fp-err"}),
        request("/api/publish", [1, 2]),
        publish("bad channel!", 1),
        publish("news:fp-err", "fine"),
    )
    answers = await conn.answers(6)
    assert [(s, b["error"]["code"]) for s, _, b in answers[:5]] == [
        (401, "unauthorized"),
        (400, "bad_request"),
        (400, "bad_request"),
        (400, "bad_request"),
        (400, "bad_request"),
    ]
    assert all(h["content-type"] == "application/json" and b["error"]["message"] for _, h, b in answers[:5])
    assert answers[5][0] == 200
    await conn.close()


async def test_other_requests_on_the_connection_go_to_aiohttp(herald: HeraldProcess) -> None:
    """publish, history, publish, healthz in one write: the fast path answers the first and hands
    the rest of the connection to aiohttp, which answers the others in order."""
    conn = await Conn.open(herald)
    await conn.send(
        publish("news:fp-mixed", "a")
        + request("/api/history/news:fp-mixed", method="GET")
        + publish("news:fp-mixed", "b")
        + request("/healthz", method="GET", key=None)
    )
    (s1, _, first), (s2, _, hist), (s3, _, second), (s4, _, health) = await conn.answers(4)
    assert (s1, s2, s3, s4) == (200, 200, 200, 200)
    assert [m["data"] for m in hist["messages"]] == ["a"]
    assert offset(second) > offset(first)
    assert health  # aiohttp's ops route answered
    await conn.close()


@pytest.mark.parametrize("headers", [{"Transfer-Encoding": "chunked"}, {"Expect": "100-continue"}])
async def test_requests_the_fast_path_leaves_to_aiohttp_still_publish(
    herald: HeraldProcess, headers: dict[str, str]
) -> None:
    body = json.dumps({"channel": "news:fp-handoff", "data": "h"}).encode()
    raw = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if "Transfer-Encoding" in headers else body
    conn = await Conn.open(herald)
    if "Expect" in headers:  # aiohttp says 100 Continue first
        await conn.send(
            request("/api/publish", raw=b"", headers=headers).replace(
                b"Content-Length: 0", b"Content-Length: %d" % len(raw)
            )
        )
        interim = await conn.reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim
        await conn.send(raw)
    else:
        await conn.send(request("/api/publish", raw=raw, headers=headers))
    [(status, _, answer)] = await conn.answers(1)
    assert status == 200 and answer["channel"] == "news:fp-handoff"
    await conn.close()


async def test_a_body_over_the_limit_is_413(herald: HeraldProcess) -> None:
    conn = await Conn.open(herald)
    await conn.send(publish("news:fp-big", "x" * 70_000))
    [(status, _, body)] = await conn.answers(1)
    assert status == 413 and body["error"]["code"] == "payload_too_big"
    await conn.close()


async def test_connection_close_is_honoured(herald: HeraldProcess) -> None:
    conn = await Conn.open(herald)
    await conn.send(publish("news:fp-close", 1, headers={"Connection": "close"}))
    [(status, headers, _)] = await conn.answers(1)
    assert status == 200 and headers.get("connection") == "close"
    assert await conn.closed_by_server()
    await conn.close()


async def test_an_endless_head_after_a_publish_is_refused_not_buffered(herald: HeraldProcess) -> None:
    """A head that never ends is not buffered without bound: past 16 KiB aiohttp gets the
    connection and refuses it."""
    conn = await Conn.open(herald)
    try:
        await conn.send(publish("news:fp-endless", 1))
        [(status, _, _)] = await conn.answers(1)
        assert status == 200
        await conn.send(b"POST /api/publish HTTP/1.1\r\nX-Pad: " + b"a" * 20_000)
        async with asyncio.timeout(seconds(10)):
            rest = await conn.reader.read()  # to EOF: the refusal, then the server hangs up
        assert re.match(rb"HTTP/1\.[01] 4\d\d ", rest), rest[:100]
    finally:
        await conn.close()
