"""The message link between the runner and a worker: a pair of asyncio queues when the worker runs
in the runner's process, a multiprocessing pipe (read through the event loop) when it does not.

Messages are tuples `(kind, payload)`: worker → runner `ready`, `progress`, `published`,
`result`, `failed`; runner → worker `start`, `expect`, `stop`. A closed pipe reads as `("eof", None)`.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from typing import Any, Protocol

__all__ = ["Link", "QueueLink", "PipeLink", "EOF"]

EOF = ("eof", None)


class Link(Protocol):
    def send(self, kind: str, payload: Any = None) -> None: ...

    async def recv(self) -> tuple[str, Any]: ...

    def close(self) -> None: ...


class QueueLink:
    """One end of an in-process link."""

    def __init__(self, inbox: asyncio.Queue[tuple[str, Any]], outbox: asyncio.Queue[tuple[str, Any]]) -> None:
        self._inbox, self._outbox = inbox, outbox

    @classmethod
    def pair(cls) -> tuple[QueueLink, QueueLink]:
        a: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        b: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        return cls(a, b), cls(b, a)

    def send(self, kind: str, payload: Any = None) -> None:
        self._outbox.put_nowait((kind, payload))

    async def recv(self) -> tuple[str, Any]:
        return await self._inbox.get()

    def close(self) -> None:
        self._outbox.put_nowait(EOF)


class PipeLink:
    """A multiprocessing Connection whose incoming messages are read by the event loop
    (`add_reader`), so no thread blocks on it. Create it inside the running loop."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._fd = conn.fileno()
        self._open = True
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                self._inbox.put_nowait(self._conn.recv())
        except (EOFError, OSError):
            self._shut()

    def _shut(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_reader(self._fd)
            self._inbox.put_nowait(EOF)

    def send(self, kind: str, payload: Any = None) -> None:
        if self._open:
            try:
                self._conn.send((kind, payload))
            except (BrokenPipeError, OSError):
                self._shut()

    async def recv(self) -> tuple[str, Any]:
        return await self._inbox.get()

    def close(self) -> None:
        self._shut()
        self._conn.close()
