"""Server → client WebSocket frames (RFC 6455 §5.2) and the close-code table (CONTRACT §5)."""

from __future__ import annotations

import struct

import pytest

from herald.core.protocol.closecodes import ADVISORY_DRAIN, ADVISORY_REBALANCE, ADVISORY_SLOW, CloseCode
from herald.core.protocol.frames import OP_BINARY, OP_PING, OP_TEXT, PING_FRAME, ws_frame


def parse_frame(frame: bytes) -> tuple[bool, int, bool, bytes, int]:
    """(fin, opcode, masked, payload, header length) of one frame, decoded by hand."""
    b0, b1 = frame[0], frame[1]
    n, pos = b1 & 0x7F, 2
    if n == 126:
        (n,) = struct.unpack("!H", frame[2:4])
        pos = 4
    elif n == 127:
        (n,) = struct.unpack("!Q", frame[2:10])
        pos = 10
    assert len(frame) == pos + n
    return bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), frame[pos:], pos


@pytest.mark.parametrize(("size", "header"), [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70000, 10)])
def test_payload_length_uses_the_shortest_rfc6455_encoding(size: int, header: int) -> None:
    """7-bit lengths up to 125, 16-bit up to 65535, 64-bit beyond; FIN set, unmasked."""
    payload = bytes(i % 251 for i in range(size))
    frame = ws_frame(OP_BINARY, payload)
    fin, opcode, masked, body, pos = parse_frame(frame)
    assert (fin, opcode, masked, body, pos) == (True, OP_BINARY, False, payload, header)


def test_text_frames_and_the_ping_frame() -> None:
    """Text frames carry opcode 1; PING_FRAME is an empty final ping."""
    assert ws_frame(OP_TEXT, b"hi") == b"\x81\x02hi"
    assert PING_FRAME == b"\x89\x00"
    assert parse_frame(PING_FRAME)[:4] == (True, OP_PING, False, b"")


def test_close_codes_match_the_contract_table() -> None:
    """Every close code of CONTRACT §5 has its value."""
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "IDLE_TIMEOUT": 4000,
        "UNAUTHORIZED": 4001,
        "FORBIDDEN": 4003,
        "SLOW_CONSUMER": 4008,
        "TOO_MANY_CONNECTIONS": 4029,
    }


def test_reconnect_advisories_close_with_their_contract_codes() -> None:
    """drain and rebalance close with 1012, slow with 4008."""
    assert (ADVISORY_DRAIN.reason, ADVISORY_DRAIN.close_code) == ("drain", 1012)
    assert (ADVISORY_REBALANCE.reason, ADVISORY_REBALANCE.close_code) == ("rebalance", 1012)
    assert (ADVISORY_SLOW.reason, ADVISORY_SLOW.close_code) == ("slow", 4008)
