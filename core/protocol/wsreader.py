"""Client → server WebSocket frames (RFC 6455 §5), sans-I/O: bytes in, whole messages out.

`FrameReader.feed(data)` returns the complete events in `data` (plus what was buffered): text
messages as `str`, binary ones as `bytes`, pings, pongs and the close frame. Protocol violations
raise `FrameError` with the close code to answer (1002 protocol error, 1007 invalid UTF-8, 1009
too big). A message's size is checked from its frame headers, before its payload is buffered.

Written here rather than taken from wsproto: an idle connection must hold no parser state at all
(the reader keeps two empty slots between messages; wsproto's parser is ~850 bytes per
connection), and wsproto serves as the reference in the tests.
"""

from __future__ import annotations

from .frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

__all__ = ["FrameReader", "FrameError", "close_payload"]

_DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)


class FrameError(Exception):
    """A frame the server must answer with a close frame carrying `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def _valid_close_code(code: int) -> bool:
    """RFC 6455 §7.4: codes a peer may send (1004-1006 and 1015 are reserved for local use)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the code and at most 123 bytes of UTF-8 reason."""
    raw = reason.encode()[:123]
    return code.to_bytes(2, "big") + raw.decode("utf-8", "ignore").encode()


class FrameReader:
    """Reassembles the client's (masked, possibly fragmented) frames into messages."""

    __slots__ = ("max_size", "_buf", "_parts", "_op", "_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf: bytes | bytearray = b""  # bytes of an incomplete frame
        self._parts: list[bytes] | None = None  # fragments of an incomplete message
        self._op = 0
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[int, object]]:
        """Complete events as `(opcode, payload)`: OP_TEXT → str, OP_BINARY/OP_PING/OP_PONG →
        bytes, OP_CLOSE → (code or None, reason). Nothing after a close frame is read."""
        if self._buf:
            self._buf += data  # a bytearray: appending is amortised, however small the pieces
            buf = self._buf
        else:
            buf = data
        events: list[tuple[int, object]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            fin, op, length = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if b0 & 0x70:
                raise FrameError(1002, "reserved bits set without an extension")
            if not b1 & 0x80:
                raise FrameError(1002, "client frames must be masked")
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
                if length >> 63:
                    raise FrameError(1002, "frame length out of range")
            if op in _CONTROL_OPS:
                if not fin or length > 125:
                    raise FrameError(1002, "control frames must be final and at most 125 bytes")
            elif op not in _DATA_OPS:
                raise FrameError(1002, f"unknown opcode {op}")
            elif op == OP_CONT and self._parts is None:
                raise FrameError(1002, "continuation frame without a message")
            elif op != OP_CONT and self._parts is not None:
                raise FrameError(1002, "new message before the previous one ended")
            elif self._size + length > self.max_size:
                raise FrameError(1009, f"message over {self.max_size} bytes")
            start = pos + head + 4
            if end - start < length:
                break
            payload = _unmask(buf[start:start + length], buf[pos + head:start])
            pos = start + length
            if op == OP_CLOSE:
                events.append((OP_CLOSE, self._close(payload)))
                self._buf, self._parts = b"", None
                return events
            if op in _CONTROL_OPS:
                events.append((op, payload))
                continue
            if op != OP_CONT:
                self._op, self._parts, self._size = op, [], 0
            self._parts.append(payload)  # type: ignore[union-attr]
            self._size += length
            if fin:
                message = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)  # type: ignore[index, arg-type]
                self._parts, self._size = None, 0
                if self._op == OP_TEXT:
                    try:
                        events.append((OP_TEXT, message.decode("utf-8")))
                    except UnicodeDecodeError:
                        raise FrameError(1007, "text message is not valid UTF-8") from None
                else:
                    events.append((OP_BINARY, message))
        if pos == end:
            self._buf = b""
        elif isinstance(buf, bytearray) and buf is self._buf:
            del buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        return events

    @staticmethod
    def _close(payload: bytes) -> tuple[int | None, str]:
        if not payload:
            return None, ""
        if len(payload) == 1:
            raise FrameError(1002, "close frame with a 1-byte payload")
        code = int.from_bytes(payload[:2], "big")
        if not _valid_close_code(code):
            raise FrameError(1002, f"invalid close code {code}")
        try:
            return code, payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(1007, "close reason is not valid UTF-8") from None
