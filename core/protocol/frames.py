"""Server → client WebSocket frames (RFC 6455 §5.2), built once and written as bytes.

Server frames are never masked, so one encoded frame can go to every subscriber unchanged.
"""

from __future__ import annotations

import struct

__all__ = ["ws_frame", "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "PING_FRAME"]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """A single final (FIN=1) unmasked frame."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


PING_FRAME = ws_frame(OP_PING, b"")
