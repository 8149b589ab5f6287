"""Small independent clients for end-to-end tests: `websockets` for WS, a raw asyncio reader for SSE."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import make_token, seconds


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a raw test connection; the server may have reset it already."""
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


class WsClient:
    """A JSON WebSocket client that keeps frames other than the one awaited."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.connected: dict[str, Any] = {}
        self._next_id = 0

    @classmethod
    async def open(cls, url: str, user: str, **token_kw: Any) -> WsClient:
        conn = await websockets.connect(
            f"{url}?token={make_token(user, **token_kw)}", subprotocols=["herald.json"], open_timeout=seconds(10)
        )
        client = cls(conn)
        client.connected = await client.recv()
        assert client.connected["type"] == "connected", client.connected
        return client

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(seconds(timeout)):
            return json.loads(await self.conn.recv())

    async def recv_until(self, predicate, timeout: float = 5.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Frames until one matches `predicate`: (that frame, the ones before it)."""
        before = []
        async with asyncio.timeout(seconds(timeout)):
            while True:
                frame = json.loads(await self.conn.recv())
                if predicate(frame):
                    return frame, before
                before.append(frame)

    async def request(self, msg: dict[str, Any], timeout: float = 5.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Send `msg` with a fresh id; return (its reply, frames received before the reply)."""
        self._next_id += 1
        msg = {**msg, "id": self._next_id}
        await self.conn.send(json.dumps(msg))
        return await self.recv_until(lambda f: f.get("id") == msg["id"], timeout)

    async def messages(self, n: int, channel: str | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        out = []
        async with asyncio.timeout(seconds(timeout)):
            while len(out) < n:
                frame = json.loads(await self.conn.recv())
                if frame.get("type") == "message" and (channel is None or frame["channel"] == channel):
                    out.append(frame)
        return out

    async def close(self) -> None:
        await self.conn.close()


class SseClient:
    """A raw HTTP/1.1 SSE reader (no client library): parses chunked transfer and SSE fields."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]
    ) -> None:
        self.reader, self.writer = reader, writer
        self.status, self.headers = status, headers
        self._buf = b""
        self.last_id: str | None = None
        self.retry: int | None = None

    @classmethod
    async def open(cls, base: str, path_qs: str, headers: dict[str, str] | None = None) -> SseClient:
        url = urlsplit(base)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        lines = [f"GET {path_qs} HTTP/1.1", f"Host: {url.netloc}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(seconds(10)):
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            hdrs = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                hdrs[k.strip().lower()] = v.strip()
        return cls(reader, writer, status, hdrs)

    async def body(self) -> bytes:
        """For non-200 answers: the whole (content-length) body."""
        n = int(self.headers.get("content-length", "0"))
        async with asyncio.timeout(seconds(5)):
            return await self.reader.readexactly(n)

    async def _chunk(self) -> bytes:
        size_line = await self.reader.readline()
        if not size_line:
            raise EOFError("stream closed")
        size = int(size_line.strip(), 16)
        data = await self.reader.readexactly(size + 2)
        if size == 0:
            raise EOFError("stream ended")
        return data[:-2]

    async def event(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event (comments skipped): {"id","event","data"} with data parsed as JSON."""
        async with asyncio.timeout(seconds(timeout)):
            while True:
                while b"\n\n" not in self._buf:
                    self._buf += await self._chunk()
                raw, self._buf = self._buf.split(b"\n\n", 1)
                ev: dict[str, Any] = {}
                for line in raw.decode().split("\n"):
                    field, _, value = line.partition(": ")
                    if field == "id":
                        ev["id"] = self.last_id = value
                    elif field == "event":
                        ev["event"] = value
                    elif field == "data":
                        ev["data"] = json.loads(value)
                    elif field == "retry":
                        self.retry = int(value)
                if "data" in ev:
                    return ev

    async def messages(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            ev = await self.event(timeout)
            if ev["data"].get("type") == "message":
                out.append(ev["data"])
        return out

    def close(self) -> None:
        self.writer.close()
