"""JSON (orjson) and msgpack codecs for the two WebSocket subprotocols.

`decode` turns a frame's payload into a Python object or raises ProtocolError; it never lets a
library exception escape. `encode` produces the bytes of one frame's payload.
"""

from __future__ import annotations

from typing import Any, Literal

import msgpack
import orjson

from .errors import ProtocolError

__all__ = ["Codec", "JsonCodec", "MsgpackCodec", "CODECS", "SUBPROTOCOLS", "codec_for_subprotocol"]


class Codec:
    name: Literal["json", "msgpack"]
    subprotocol: str
    #: WebSocket opcode of the frames this codec produces (1 text, 2 binary).
    opcode: int

    def encode(self, obj: Any) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes | str) -> Any:
        raise NotImplementedError


class JsonCodec(Codec):
    name = "json"
    subprotocol = "herald.json"
    opcode = 1

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, payload: bytes | str) -> Any:
        if isinstance(payload, bytes):
            raise ProtocolError("binary frames need the herald.msgpack subprotocol")
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("malformed JSON") from exc


class MsgpackCodec(Codec):
    name = "msgpack"
    subprotocol = "herald.msgpack"
    opcode = 2

    def encode(self, obj: Any) -> bytes:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
        return packed

    def decode(self, payload: bytes | str) -> Any:
        if isinstance(payload, str):
            raise ProtocolError("text frames need the herald.json subprotocol")
        try:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException) as exc:  # ExtraData, FormatError, StackError, bad UTF-8
            raise ProtocolError("malformed msgpack") from exc
        try:
            # Every subscriber must be able to receive it as JSON too: no bin, ext or huge ints.
            orjson.dumps(obj)
        except TypeError as exc:
            raise ProtocolError("msgpack value has no JSON equivalent (bin, ext or a non-string key)") from exc
        return obj


JSON = JsonCodec()
MSGPACK = MsgpackCodec()
CODECS: dict[str, Codec] = {"json": JSON, "msgpack": MSGPACK}
SUBPROTOCOLS: tuple[str, ...] = (JSON.subprotocol, MSGPACK.subprotocol)


def codec_for_subprotocol(subprotocol: str | None) -> Codec:
    """The codec for a negotiated subprotocol; herald.json when none was offered."""
    return MSGPACK if subprotocol == MSGPACK.subprotocol else JSON
