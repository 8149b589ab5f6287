"""Client → server WebSocket frames (RFC 6455 §5), sans-I/O: bytes in, whole messages out.

`FrameReader.feed(data)` returns the complete events in `data` (plus what was buffered): text
messages as `str`, binary ones as `bytes`, pings, pongs and the close frame. Protocol violations
raise `FrameError` with the close code to answer (1002 protocol error, 1007 invalid UTF-8, 1009
too big). A message's size is checked from its frame headers, before its payload is buffered.

What a message in progress may cost is bounded (hostile clients, issue 16): its fragments are
accumulated into one bytearray, never a list of objects, so the memory held is the message's
payload (at most `max_size`) plus one incomplete frame (at most the rest of `max_size`); and a
message may have at most `MAX_FRAGMENTS` frames (more: 1009), so empty continuation frames cannot
be sent forever. `first_max_size` bounds the first message alone: a connection that has not
authenticated yet may only send something the size of an auth message.

Written here rather than taken from wsproto: an idle connection must hold no parser state at all
(the reader keeps two empty slots between messages; wsproto's parser is ~850 bytes per
connection), and wsproto serves as the reference in the tests.
"""

from __future__ import annotations

from .frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

__all__ = ["FrameReader", "FrameError", "close_payload", "MAX_FRAGMENTS", "MAX_AUTH_MESSAGE"]

#: Frames one message may have (the first and its continuations). Browsers never fragment what
#: they send; libraries that do use a few large fragments. More is refused with 1009.
MAX_FRAGMENTS = 1024
#: Bytes of the first message of a connection that has not authenticated yet: room for
#: `{"type":"auth","token":...}` with a token of up to 8 KiB (core/auth.py refuses longer ones).
MAX_AUTH_MESSAGE = 10_240

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

    __slots__ = ("max_size", "_limit", "_buf", "_msg", "_op", "_frags")

    def __init__(self, max_size: int, first_max_size: int | None = None) -> None:
        self.max_size = max_size
        self._limit = max_size if first_max_size is None else min(first_max_size, max_size)  # this message's
        self._buf: bytes | bytearray = b""  # bytes of an incomplete frame
        self._msg: bytearray | None = None  # payload of an incomplete (fragmented) message
        self._op = 0
        self._frags = 0  # frames of the incomplete message so far

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
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
                if length >> 63:
                    raise FrameError(1002, "frame length out of range")
            msg = self._msg
            if op in _CONTROL_OPS:
                if not fin or length > 125:
                    raise FrameError(1002, "control frames must be final and at most 125 bytes")
            elif op not in _DATA_OPS:
                raise FrameError(1002, f"unknown opcode {op}")
            elif op == OP_CONT:
                if msg is None:
                    raise FrameError(1002, "continuation frame without a message")
                if len(msg) + length > self._limit:
                    raise FrameError(1009, f"message over {self._limit} bytes")
                if self._frags >= MAX_FRAGMENTS:
                    raise FrameError(1009, f"message in more than {MAX_FRAGMENTS} fragments")
            elif msg is not None:
                raise FrameError(1002, "new message before the previous one ended")
            elif length > self._limit:
                raise FrameError(1009, f"message over {self._limit} bytes")
            start = pos + head + 4
            if end - start < length:
                break
            payload = _unmask(buf[start : start + length], buf[pos + head : start])
            pos = start + length
            if op == OP_CLOSE:
                events.append((OP_CLOSE, self._close(payload)))
                self._buf, self._msg = b"", None
                return events
            if op in _CONTROL_OPS:
                events.append((op, payload))
                continue
            if msg is None:
                if not fin:  # the first fragment of a message
                    self._op, self._msg, self._frags = op, bytearray(payload), 1
                    continue
                message: bytes | bytearray = payload  # the common case: a message in one frame
            else:
                msg += payload
                self._frags += 1
                if not fin:
                    continue
                message, self._msg, op = msg, None, self._op
            self._limit = self.max_size  # after the first message, the connection's own limit
            if op == OP_TEXT:
                try:
                    events.append((OP_TEXT, message.decode("utf-8")))
                except UnicodeDecodeError:
                    raise FrameError(1007, "text message is not valid UTF-8") from None
            else:
                events.append((OP_BINARY, bytes(message)))
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
