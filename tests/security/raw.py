"""Raw-socket clients for the hostile-client tests: HTTP heads written byte by byte, WebSocket
frames built by hand (tests/unit/test_wsreader.py's builder), and the server's frames read back."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

from herald.core.protocol.frames import OP_CLOSE
from tests.conftest import seconds
from tests.e2e.clients import close_writer
from tests.unit.test_wsreader import client_frame

__all__ = [
    "connect",
    "read_response",
    "upgrade",
    "read_frame",
    "read_until_close",
    "wait_closed",
    "rss_kib",
    "client_frame",
    "close_writer",
    "upgrade_head",
]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int) -> Streams:
    async with asyncio.timeout(seconds(5)):
        return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.x response: (status, lower-case headers, body by Content-Length)."""
    async with asyncio.timeout(seconds(timeout)):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def upgrade_head(port: int, target: str = "/ws", headers: dict[str, str | None] | None = None) -> bytes:
    """A WebSocket upgrade request; `headers` replace the defaults (None: left out)."""
    hdrs: dict[str, str | None] = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "herald.json",
    }
    hdrs.update(headers or {})
    lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in hdrs.items() if v is not None)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def upgrade(port: int, token: str | None = None, headers: dict[str, str | None] | None = None) -> Streams:
    """An upgraded connection (101 read); AssertionError with the status otherwise."""
    reader, writer = await connect(port)
    writer.write(upgrade_head(port, f"/ws?token={token}" if token else "/ws", headers))
    async with asyncio.timeout(seconds(5)):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """One (unmasked) server frame; None at EOF."""
    try:
        b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        return b0 & 0x0F, await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def read_until_close(reader: asyncio.StreamReader, timeout: float = 5.0) -> tuple[int | None, list[Any]]:
    """Frames until the server's close frame (or EOF): (its code, the frames before it)."""
    frames: list[Any] = []
    async with asyncio.timeout(seconds(timeout)):
        while True:
            frame = await read_frame(reader)
            if frame is None:
                return None, frames
            op, payload = frame
            if op == OP_CLOSE:
                return (struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None), frames
            frames.append((op, json.loads(payload) if op == 1 else payload))


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it does not)."""
    data = b""
    async with asyncio.timeout(seconds(timeout)):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:
                return data
            if not chunk:
                return data
            data += chunk


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")
