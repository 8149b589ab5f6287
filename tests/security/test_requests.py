"""Requests every HTTP server must refuse, and answers every HTTP server must give (issue 16,
items 5 and the smaller findings): missing or duplicate `Host` → 400 on the publish fast path,
the WebSocket edge and aiohttp alike; an `Origin` with the wrong scheme → 403; requests sent
before a half-close (FIN) are all answered."""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from tests.conftest import make_token
from tests.e2e.server import HeraldProcess
from tests.security.raw import close_writer, connect, read_response, upgrade_head, wait_closed


def uid() -> str:
    return uuid.uuid4().hex[:10]


def publish_request(channel: str, *, host: list[str] | None = None, extra: bytes = b"") -> bytes:
    body = json.dumps({"channel": channel, "data": {"n": 1}}).encode()
    hosts = b"".join(b"Host: %b\r\n" % h.encode() for h in (["x"] if host is None else host))
    return (
        b"POST /api/publish HTTP/1.1\r\n%bAuthorization: apikey dev-key\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%b\r\n%b" % (hosts, len(body), extra, body)
    )


def _history(server: HeraldProcess, channel: str) -> list[dict]:
    status, body = server.api("GET", f"/api/history/{channel}")
    assert status == 200, body
    return body["messages"]


async def _answer(server: HeraldProcess, data: bytes) -> tuple[int, dict]:
    reader, writer = await connect(server.port)
    try:
        writer.write(data)
        status, headers, body = await read_response(reader)
    finally:
        await close_writer(writer)
    assert headers["content-type"].startswith("application/json"), headers
    return status, json.loads(body)


# --- Host (RFC 9112 §3.2) ---------------------------------------------------------------------

_HOSTS = {"missing": [], "duplicate": ["x", "evil.example"]}


@pytest.mark.parametrize("hosts", list(_HOSTS))
async def test_the_fast_path_answers_400_to_a_missing_or_duplicate_host_and_publishes_nothing(
    default_node: HeraldProcess, hosts: str
) -> None:
    channel = f"news:host-{uid()}"
    status, body = await _answer(default_node, publish_request(channel, host=_HOSTS[hosts]))
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert _history(default_node, channel) == []


@pytest.mark.parametrize("hosts", list(_HOSTS))
async def test_a_later_request_on_the_fast_path_with_a_bad_host_is_400(default_node: HeraldProcess, hosts: str) -> None:
    channel = f"news:host-{uid()}"
    reader, writer = await connect(default_node.port)
    try:
        writer.write(publish_request(channel) + publish_request(channel, host=_HOSTS[hosts]))
        assert (await read_response(reader))[0] == 200
        assert (await read_response(reader))[0] == 400
    finally:
        await close_writer(writer)
    assert len(_history(default_node, channel)) == 1


@pytest.mark.parametrize("hosts", list(_HOSTS))
async def test_the_websocket_edge_answers_400_to_a_missing_or_duplicate_host(
    default_node: HeraldProcess, hosts: str
) -> None:
    port = default_node.port
    head = upgrade_head(port, f"/ws?token={make_token(f'h-{uid()}')}", {"Host": None})
    head = head.replace(b"\r\n\r\n", b"".join(b"\r\nHost: %b" % h.encode() for h in _HOSTS[hosts]) + b"\r\n\r\n")
    status, body = await _answer(default_node, head)
    assert status == 400 and body["error"]["code"] == "bad_request"


@pytest.mark.parametrize("hosts", list(_HOSTS))
async def test_aiohttp_routes_answer_400_to_a_missing_or_duplicate_host_with_the_json_body(
    default_node: HeraldProcess, hosts: str
) -> None:
    head = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"Host: %b\r\n" % h.encode() for h in _HOSTS[hosts]) + b"\r\n"
    status, body = await _answer(default_node, head)
    assert status == 400 and body["error"]["code"] == "bad_request"


# --- Origin ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://127.0.0.1:{port}", 403),
        ("http://127.0.0.1:{port}", 101),
        ("http://127.0.0.1:1", 403),
        ("http://evil.example", 403),
    ],
)
async def test_the_nodes_own_origin_must_match_in_scheme_host_and_port(
    default_node: HeraldProcess, origin: str, status: int
) -> None:
    port = default_node.port
    reader, writer = await connect(port)
    try:
        writer.write(upgrade_head(port, f"/ws?token={make_token(f'o-{uid()}')}", {"Origin": origin.format(port=port)}))
        got, _, body = await read_response(reader)
    finally:
        await close_writer(writer)
    assert got == status, body
    if status == 403:
        assert json.loads(body)["error"]["code"] == "forbidden"


# --- half-close --------------------------------------------------------------------------------


def _send_then_fin(port: int, data: bytes) -> bytes:
    """Send `data`, half-close (FIN), read until the server closes (blocking, bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("tries", range(5))
def test_publishes_on_the_fast_path_before_a_fin_are_all_answered(default_node: HeraldProcess, tries: int) -> None:
    channel = f"news:fin-{uid()}"
    out = _send_then_fin(default_node.port, publish_request(channel) * 3)
    assert out.count(b"HTTP/1.1 200 OK") == 3, out
    assert len(_history(default_node, channel)) == 3


@pytest.mark.parametrize("tries", range(5))
def test_requests_to_aiohttp_before_a_fin_are_all_answered(default_node: HeraldProcess, tries: int) -> None:
    user = f"fin-{uid()}"
    body = json.dumps({"userId": user, "message": {"n": 1}}).encode()
    notify = b"POST /notify HTTP/1.1\r\nHost: x\r\nAuthorization: apikey dev-key\r\nContent-Length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )
    out = _send_then_fin(default_node.port, notify * 3)
    assert out.count(b"HTTP/1.1 200 OK") == 3, out
    assert len(_history(default_node, f"user:{user}")) == 3


def test_a_fin_with_nothing_to_answer_closes_at_once(default_node: HeraldProcess) -> None:
    assert _send_then_fin(default_node.port, b"GET /heal") == b""


async def test_a_fin_on_an_idle_kept_alive_connection_closes_it(default_node: HeraldProcess) -> None:
    reader, writer = await connect(default_node.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.write_eof()
        assert await wait_closed(reader, 5) == b""
    finally:
        await close_writer(writer)
