"""The WebSocket opening handshake (core/protocol/handshake.py), bytes only: RFC 6455 §4.2 and
the contract's HTTP error body (CONTRACT §5, §7). Responses are checked by parsing them back with
httptools' response parser."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.core.protocol.handshake import (
    MAX_HEAD,
    Head,
    HeadError,
    accept,
    choose_subprotocol,
    parse_head,
    upgrade_error,
)
from herald.core.web.http import http_error

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
SUPPORTED = ("herald.json", "herald.msgpack")


def request(
    target: str = "/ws?token=abc",
    *,
    method: str = "GET",
    version: str = "1.1",
    headers: dict[str, str] | None = None,
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    """A request head; `headers` replace the defaults of a valid upgrade (None value: left out)."""
    hdrs: dict[str, str | None] = {
        "Host": "127.0.0.1:8000",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    hdrs.update(headers or {})
    lines = [f"{method} {target} HTTP/{version}"] + [f"{k}: {v}" for k, v in hdrs.items() if v is not None]
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def head_of(data: bytes) -> Head:
    head = parse_head(data)
    assert head is not None
    return head


class _Response:
    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a complete HTTP/1.1 response, by llhttp."""
    collector = _Response()
    parser = httptools.HttpResponseParser(collector)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass  # a 101 ends the HTTP part
    headers = dict(collector.headers)
    assert len(headers) == len(collector.headers), f"repeated headers: {collector.headers}"
    return parser.get_status_code(), headers, collector.body


# ==============================================================================================
# parse_head
# ==============================================================================================


def test_a_complete_upgrade_request_is_parsed() -> None:
    head = head_of(request())
    assert (head.method, head.path, head.query_string, head.version) == ("GET", "/ws", "token=abc", "1.1")
    assert head.headers["sec-websocket-key"] == KEY
    assert head.headers["host"] == "127.0.0.1:8000"
    assert head.upgrade is True


def test_header_names_are_lower_case_and_values_kept() -> None:
    head = head_of(request(extra=[("X-Mixed-CASE", "Value With Spaces")]))
    assert head.headers["x-mixed-case"] == "Value With Spaces"


def test_a_request_without_connection_upgrade_is_not_an_upgrade() -> None:
    head = head_of(request(headers={"Connection": "keep-alive"}))
    assert head.upgrade is False
    assert head.body_start == len(request(headers={"Connection": "keep-alive"}))


@pytest.mark.parametrize("cut", [0, 1, 3, 7, 20, -3, -2, -1])
def test_an_incomplete_head_is_none(cut: int) -> None:
    data = request()
    assert parse_head(data[:cut] if cut >= 0 else data[: len(data) + cut]) is None


@given(st.integers(0, len(request()) - 1))
@settings(max_examples=100, deadline=None)
def test_every_prefix_of_a_head_is_incomplete(cut: int) -> None:
    assert parse_head(request()[:cut]) is None


def test_an_incomplete_head_over_the_limit_is_a_head_error() -> None:
    data = b"GET /ws?token=" + b"a" * MAX_HEAD + b" HTTP/1.1\r\nHost: x\r\n"
    with pytest.raises(HeadError):
        parse_head(data)
    assert parse_head(b"GET /ws?token=" + b"a" * (MAX_HEAD - 100)) is None  # under the limit: wait for more


@pytest.mark.parametrize("where", ["request-line", "header"])
def test_a_complete_head_over_the_limit_is_a_head_error(where: str) -> None:
    """MAX_HEAD bounds the head whether or not its end arrived in the same read: the same request
    must not be refused when it comes in two segments and accepted when it comes in one."""
    big = "a" * (MAX_HEAD + 1)
    data = request(f"/ws?token={big}") if where == "request-line" else request(extra=[("X-Big", big)])
    with pytest.raises(HeadError):
        parse_head(data[: MAX_HEAD + 10])  # the first segment alone
    with pytest.raises(HeadError):
        parse_head(data)  # the whole head at once


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
    ],
    ids=["no-method", "header-without-colon", "nul-in-target", "version", "bad-target", "bad-content-length"],
)
def test_a_malformed_head_is_a_head_error(data: bytes) -> None:
    with pytest.raises(HeadError):
        parse_head(data)


def test_repeated_headers_are_joined_with_commas() -> None:
    head = head_of(request(extra=[("Sec-WebSocket-Protocol", "a"), ("sec-websocket-protocol", "b, c")]))
    assert head.headers["sec-websocket-protocol"] == "a, b, c"


def test_body_start_points_at_the_bytes_after_the_head() -> None:
    """A client may send its first frame in the same write as the handshake."""
    frame = b"\x81\x85\x01\x02\x03\x04" + bytes(b ^ k for b, k in zip(b"hello", b"\x01\x02\x03\x04\x01"))
    data = request() + frame
    head = head_of(data)
    assert head.upgrade and data[head.body_start :] == frame


def test_only_the_first_of_two_pipelined_requests_is_parsed() -> None:
    """`parse_head` is about the head at the start of the data: a second request behind it must
    neither extend the path nor add its headers."""
    first = b"GET /a HTTP/1.1\r\nHost: one\r\n\r\n"
    data = first + b"GET /b HTTP/1.1\r\nHost: two\r\n\r\n"
    head = head_of(data)
    assert head.path == "/a"
    assert head.headers == {"host": "one"}
    assert head.body_start == len(first)


def test_query_parameters_are_decoded() -> None:
    head = head_of(request("/ws?a=1&token=x%2By%3D&empty=&token=second"))
    assert head.query("token") == "x+y="  # the first of repeated parameters
    assert head.query("empty") == ""
    assert head.query("a") == "1"
    assert head.query("missing") is None
    assert head_of(request("/ws")).query("token") is None


@pytest.mark.parametrize(
    "cookie,value",
    [
        ("herald_token=abc", "abc"),
        ("a=1; herald_token=abc; b=2", "abc"),
        ('herald_token="abc"', "abc"),
        ("a=1;herald_token=abc", "abc"),
        ("xherald_token=abc", None),
        ("herald_token_x=abc", None),
        ("a=1; b=2", None),
        ("herald_token", None),
        ("herald_token=", ""),
    ],
)
def test_cookies_are_read_by_exact_name(cookie: str, value: str | None) -> None:
    assert head_of(request(extra=[("Cookie", cookie)])).cookie("herald_token") == value


def test_no_cookie_header_means_no_cookie() -> None:
    assert head_of(request()).cookie("herald_token") is None


# ==============================================================================================
# upgrade_error
# ==============================================================================================


def test_a_valid_upgrade_has_no_error() -> None:
    assert upgrade_error(head_of(request())) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Connection": "keep-alive, Upgrade"},
        {"Upgrade": "WebSocket"},
        {"Connection": "upgrade"},
        {"Sec-WebSocket-Version": " 13 "},
    ],
)
def test_usual_browser_variants_are_valid_upgrades(headers: dict[str, str]) -> None:
    """Firefox sends `Connection: keep-alive, Upgrade`; tokens are case-insensitive."""
    assert upgrade_error(head_of(request(headers=headers))) is None


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD"])
def test_a_method_other_than_get_is_405(method: str) -> None:
    problem = upgrade_error(head_of(request(method=method)))
    assert problem is not None and problem[0] == 405


def test_http_1_0_is_400() -> None:
    problem = upgrade_error(head_of(request(version="1.0")))
    assert problem is not None and problem[0] == 400


@pytest.mark.parametrize(
    "headers",
    [
        {"Upgrade": None},
        {"Connection": None},
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Upgrade": "websocketx"},
        {"Connection": "upgraded"},
    ],
    ids=[
        "no-upgrade",
        "no-connection",
        "other-protocol",
        "no-upgrade-token",
        "upgrade-lookalike",
        "connection-lookalike",
    ],
)
def test_missing_upgrade_or_connection_tokens_are_400(headers: dict[str, str | None]) -> None:
    data = request(headers=headers)  # type: ignore[arg-type]
    problem = upgrade_error(head_of(data))
    assert problem is not None and problem[0] == 400 and problem[1]


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", "", "thirteen"])
def test_a_websocket_version_other_than_13_is_426(version: str) -> None:
    problem = upgrade_error(head_of(request(headers={"Sec-WebSocket-Version": version})))
    assert problem is not None and problem[0] == 426


def test_a_missing_websocket_version_is_refused() -> None:
    problem = upgrade_error(head_of(request(headers={"Sec-WebSocket-Version": None})))  # type: ignore[dict-item]
    assert problem is not None and problem[0] in (400, 426)


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "abc",
        base64.b64encode(b"x" * 15).decode(),
        base64.b64encode(b"x" * 17).decode(),
        "!!!!!!!!!!!!!!!!!!!!!!!=",
        KEY[:-2],
        KEY + "AA==",
    ],
    ids=["missing", "empty", "short", "15-bytes", "17-bytes", "not-base64", "unpadded", "trailing"],
)
def test_a_key_that_is_not_16_bytes_of_base64_is_400(key: str | None) -> None:
    problem = upgrade_error(head_of(request(headers={"Sec-WebSocket-Key": key})))  # type: ignore[dict-item]
    assert problem is not None and problem[0] == 400


@given(st.binary(min_size=16, max_size=16))
@settings(max_examples=50, deadline=None)
def test_any_16_byte_key_is_valid(raw: bytes) -> None:
    assert upgrade_error(head_of(request(headers={"Sec-WebSocket-Key": base64.b64encode(raw).decode()}))) is None


# ==============================================================================================
# choose_subprotocol and accept
# ==============================================================================================


@pytest.mark.parametrize(
    "offered,chosen",
    [
        (None, None),
        ("herald.json", "herald.json"),
        ("herald.msgpack", "herald.msgpack"),
        ("herald.msgpack, herald.json", "herald.msgpack"),
        ("herald.json, herald.msgpack", "herald.json"),
        ("chat, herald.msgpack", "herald.msgpack"),
        ("chat, superchat", None),
        ("herald.JSON", None),
        ("herald.json2, herald.msgpack", "herald.msgpack"),
        (" herald.msgpack ,herald.json", "herald.msgpack"),
    ],
)
def test_the_first_supported_subprotocol_in_the_clients_order_is_chosen(
    offered: str | None, chosen: str | None
) -> None:
    head = head_of(request(headers={"Sec-WebSocket-Protocol": offered}))  # type: ignore[dict-item]
    assert choose_subprotocol(head, SUPPORTED) == chosen


def test_subprotocols_offered_in_several_headers_keep_their_order() -> None:
    head = head_of(
        request(extra=[("Sec-WebSocket-Protocol", "other"), ("Sec-WebSocket-Protocol", "herald.msgpack, herald.json")])
    )
    assert choose_subprotocol(head, SUPPORTED) == "herald.msgpack"


def test_accept_computes_the_rfc_6455_example() -> None:
    status, headers, _ = parse_response(accept(head_of(request()), None))
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert "sec-websocket-protocol" not in headers


def test_accept_names_the_chosen_subprotocol() -> None:
    data = accept(head_of(request(headers={"Sec-WebSocket-Protocol": "herald.msgpack"})), "herald.msgpack")
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1
    assert parse_response(data)[1]["sec-websocket-protocol"] == "herald.msgpack"


@given(st.binary(min_size=16, max_size=16))
@settings(max_examples=50, deadline=None)
def test_accept_is_the_base64_sha1_of_key_and_guid(raw: bytes) -> None:
    key = base64.b64encode(raw).decode()
    want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    assert (
        parse_response(accept(head_of(request(headers={"Sec-WebSocket-Key": key})), None))[1]["sec-websocket-accept"]
        == want
    )


def test_the_key_is_trimmed_before_hashing() -> None:
    data = request().replace(f"Sec-WebSocket-Key: {KEY}".encode(), f"Sec-WebSocket-Key:   {KEY}  ".encode())
    assert parse_response(accept(head_of(data), None))[1]["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# ==============================================================================================
# http_error
# ==============================================================================================


@pytest.mark.parametrize(
    "status,slug",
    [
        (400, "bad_request"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (405, "method_not_allowed"),
        (426, "upgrade_required"),
        (503, "draining"),
    ],
)
def test_http_error_is_a_complete_response_with_the_contract_body(status: int, slug: str) -> None:
    data = http_error(status, slug, "what went wrong — en détail")
    got, headers, body = parse_response(data)
    assert got == status
    assert data.startswith(f"HTTP/1.1 {status} ".encode())
    assert headers["content-type"].startswith("application/json")
    assert int(headers["content-length"]) == len(body) == len(data) - data.index(b"\r\n\r\n") - 4
    assert headers["connection"].lower() == "close"
    assert json.loads(body) == {"error": {"code": slug, "message": "what went wrong — en détail"}}


def test_http_error_carries_extra_headers() -> None:
    _, headers, _ = parse_response(http_error(426, "upgrade_required", "use 13", {"Sec-WebSocket-Version": "13"}))
    assert headers["sec-websocket-version"] == "13"


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None)
def test_http_error_bodies_are_json_for_any_message(message: str) -> None:
    _, headers, body = parse_response(http_error(400, "bad_request", message))
    parsed: Any = json.loads(body)
    assert parsed == {"error": {"code": "bad_request", "message": message}}
    assert int(headers["content-length"]) == len(body)


# ==============================================================================================
# Hostile requests (issue 16): Host, bare LF, where a head ends, Origin
# ==============================================================================================

from herald.core.protocol.handshake import head_end, origin_allowed  # noqa: E402


def test_a_request_without_host_is_a_head_error() -> None:
    with pytest.raises(HeadError):
        parse_head(request(headers={"Host": None}))


def test_a_request_with_two_host_headers_is_a_head_error() -> None:
    with pytest.raises(HeadError):
        parse_head(request(extra=[("Host", "evil.example")]))


def test_http_1_0_may_leave_host_out() -> None:
    assert head_of(b"GET /healthz HTTP/1.0\r\n\r\n").version == "1.0"


@pytest.mark.parametrize(
    "data",
    [
        b"GET /healthz HTTP/1.1\nHost: a\n\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\n\n",
        b"GET /healthz HTTP/1.1\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    ],
)
def test_bare_lf_line_ends_are_a_head_error_as_soon_as_the_head_ends(data: bytes) -> None:
    assert head_end(data) == len(data)
    with pytest.raises(HeadError):
        parse_head(data)


@pytest.mark.parametrize("cut", range(1, 40))
def test_head_end_is_minus_one_for_every_prefix_of_a_head(cut: int) -> None:
    data = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    assert head_end(data[:cut] if cut < len(data) else data[:-1]) == -1
    assert head_end(data) == len(data)


_ALLOWED = ("https://app.example", "http://localhost:3000")


@pytest.mark.parametrize(
    ("origin", "host", "proto", "ok"),
    [
        (None, "h:8000", None, True),  # not a browser
        ("http://h:8000", "h:8000", None, True),  # the node's own origin (plain HTTP)
        ("https://h:8000", "h:8000", None, False),  # same host and port, other scheme
        ("https://h", "h", "https", True),  # behind a TLS-terminating proxy
        ("http://h", "h", "https", False),
        ("http://h:8001", "h:8000", None, False),  # other port
        ("http://H:8000", "h:8000", None, True),  # host names are case-insensitive
        ("http://h:80", "h", None, True),  # a default port may be written or not
        ("https://app.example", "h:8000", None, True),
        ("https://app.example:443", "h:8000", None, True),
        ("http://app.example", "h:8000", None, False),  # an allowed host with the wrong scheme
        ("https://app.example:8443", "h:8000", None, False),
        ("http://localhost:3000", "h:8000", None, True),
        ("http://localhost", "h:8000", None, False),
        ("null", "h:8000", None, False),
        ("http://h:8000/path", "h:8000", None, False),
        ("http://h:bad", "h:8000", None, False),
    ],
)
def test_origin_is_compared_by_scheme_host_and_port(origin: str | None, host: str, proto: str | None, ok: bool) -> None:
    assert origin_allowed(origin, host, _ALLOWED, proto) is ok


def test_a_star_allows_every_origin() -> None:
    assert origin_allowed("https://anything.example", "h", ("*",))
