"""core/web/heads.py's HeadGate: the cap on heads in progress and the rate of malformed-request lines."""

from __future__ import annotations

import json

from structlog.testing import capture_logs

from herald.core.web.heads import REFUSAL, HeadGate, HttpLimits


def test_the_gate_counts_heads_up_to_the_cap_and_refuses_beyond_it() -> None:
    gate = HeadGate(HttpLimits(max_pending_heads=2))
    assert gate.acquire() and gate.acquire()
    assert not gate.acquire()
    assert gate.pending == 2 and gate.refused == 1
    gate.release()
    assert gate.acquire()


def test_malformed_requests_are_logged_at_a_bounded_rate() -> None:
    gate = HeadGate(HttpLimits())
    with capture_logs() as logs:
        for _ in range(1000):
            gate.malformed("192.0.2.1", "Bad status line", 400)
    assert 10 <= len(logs) <= 12  # the burst, and what refilled meanwhile
    assert {e["event"] for e in logs} == {"http.request.malformed"}
    assert logs[0]["log_level"] == "warning" and logs[0]["peer"] == "192.0.2.1"


def test_the_refusal_is_a_complete_503_with_the_contract_error_body() -> None:
    head, _, body = REFUSAL.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["error"]["code"] == "overloaded"
