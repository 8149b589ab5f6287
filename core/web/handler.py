"""aiohttp's request handler with Herald's rules for hostile or careless clients.

`HeraldRequestHandler` is aiohttp's `RequestHandler` (one per connection) with four changes:

* a malformed request is answered with the contract's JSON error body (`{"error":{"code":
  "bad_request",...}}`), never aiohttp's plain text, which quotes the offending bytes back; it is
  logged as one short rate-limited WARNING (`http.request.malformed`: peer, reason), not a
  traceback that quotes the request line (and the token or key in it);
* the head of a later request on a kept-alive connection has the same deadline as the first
  one's (`head_timeout` from its first byte) and counts against the same cap while it arrives;
  an idle kept-alive connection is closed after `keepalive_timeout` (aiohttp's own timer, which
  herald sets);
* a client that half-closes (FIN) after its requests gets every answer: the connection is
  closed after the last one, not at the FIN.

It relies on three attributes of aiohttp's handler, `_waiter` (set while it waits for the next
request), `_messages` (parsed requests not yet handled) and `_current_request`; tests/security
pins the behaviour.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web

from .heads import REFUSAL, HeadGate, ProtocolFactory
from .http import error_body

__all__ = ["HeraldRequestHandler", "handler_factory"]

log = structlog.get_logger("herald.http")

_SLUGS = {400: "bad_request", 413: "payload_too_big", 431: "bad_request", 501: "not_implemented", 504: "timeout"}
_CUT = re.compile(r"[:'\"\n\r\\(]")
_NAME = re.compile(r"'([A-Za-z0-9-]{1,40})'")  # a header name aiohttp quotes ("Duplicate 'Host' header")


def _reason(exc: BaseException | None, message: str | None) -> str:
    """What was wrong, in a few words and without the request's bytes (aiohttp's messages quote
    them after a colon or in quotes)."""
    text = getattr(exc, "message", None) or message or ""
    text = _CUT.split(_NAME.sub(r"\1", str(text)), 1)[0].strip().rstrip(".")[:80]
    return text or (type(exc).__name__ if exc is not None else "malformed request")


class HeraldRequestHandler(web.RequestHandler):
    __slots__ = ("_gate", "_peer_eof", "_head_timer")

    def __init__(self, manager: web.Server, gate: HeadGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._peer_eof = False
        self._head_timer: Any = None  # the deadline of a later request's head, while it arrives

    # --- heads of later requests --------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        waiting = waiter is not None and not waiter.done()  # no complete request since the last answer
        if self._head_timer is None:
            if data and waiting and self.transport is not None:
                if not self._gate.acquire():
                    self.transport.write(REFUSAL)
                    self.force_close()
                    return
                self._head_timer = self._loop.call_later(self._gate.limits.head_timeout, self._head_expired)
        elif not waiting:
            self._head_done()

    def _head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
            self._gate.release()

    def _head_expired(self) -> None:
        self._head_timer = None
        self._gate.release()
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_done()
        super().connection_lost(exc)

    # --- half-close ---------------------------------------------------------------------------
    def eof_received(self) -> bool:  # type: ignore[override]  # True keeps the transport half-open
        """The client sent FIN: nothing more will come. Idle (or in the middle of a head that can
        no longer be completed), or streaming a response (SSE: that client is gone): close now.
        Otherwise keep the socket open for the answers."""
        self._peer_eof = True
        waiter, current = self._waiter, self._current_request
        if current is not None and current.writer.output_size > 0:
            return False
        return not (waiter is not None and not waiter.done() and not self._messages)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        last = self._peer_eof and not self._messages
        if last:
            resp.force_close()
        result = await super().finish_response(request, resp, start_time)
        if self._peer_eof and not self._messages:  # the FIN may have come while this answer was written
            self.close()
        return result

    # --- malformed requests -------------------------------------------------------------------
    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            log.error(
                "http.request.failed", status=status, peer=request.remote, exc_info=exc if exc is not None else False
            )
            text = "internal error" if status == 500 else _reason(exc, message)
        else:
            text = _reason(exc, message)
            self._gate.malformed(request.remote, text, status)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        resp = web.Response(
            status=status,
            body=error_body(_SLUGS.get(status, "http_error" if status < 500 else "internal_error"), text),
            content_type="application/json",
        )
        resp.force_close()
        return resp


def handler_factory(server: web.Server, gate: HeadGate) -> ProtocolFactory:
    """aiohttp's protocol factory (`runner.server`), making HeraldRequestHandlers with the same
    arguments aiohttp would have given its own handlers."""
    kwargs = dict(getattr(server, "_kwargs", {}))
    loop = server._loop
    return lambda: HeraldRequestHandler(server, gate, loop=loop, **kwargs)
