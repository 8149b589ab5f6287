"""core/logging.py: no credential reaches a log line, whatever logger wrote it (issue 16)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from herald.core.logging import REDACTED, redact, scrub

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {JWT}",
        f"authorization: bearer {JWT}\r\n",
        "Authorization: apikey s3cr3t-key-value",
        f"b'GET /ws?token={JWT} HTTP/1.1\\r\\nHost: x\\r\\n'",
        f"GET /events?channel=a&token={JWT}&x=1",
        "token=opaque-not-a-jwt-value",
        f"Cookie: herald_token={JWT}; other=1",
        f"a JWT on its own: {JWT}.",
        "Set-Cookie: session=abcdef",
    ],
)
def test_scrub_removes_every_kind_of_credential(text: str) -> None:
    out = scrub(text)
    assert REDACTED in out
    for secret in (JWT, "s3cr3t-key-value", "opaque-not-a-jwt-value", "abcdef"):
        assert secret not in out
    assert "eyJ" not in out


def test_scrub_leaves_ordinary_text_alone() -> None:
    text = "ws.closed code=1000 reason=normal path=/api/publish"
    assert scrub(text) == text


def test_redact_cleans_strings_nested_values_and_credential_keys() -> None:
    event: dict[str, Any] = {
        "event": "http.request.malformed",
        "token": "abc",
        "api_key": "k",
        "headers": {"Authorization": f"Bearer {JWT}", "x": [f"token={JWT}"]},
        "exception": "Traceback ...\nBadHttpMessage: b'Authorization: apikey dev-key\\r\\n'",
        "code": 400,
    }
    out = redact(None, "warning", event)
    text = repr(out)
    assert JWT not in text and "dev-key" not in text and "'abc'" not in text
    assert out["code"] == 400 and out["event"] == "http.request.malformed"


def test_stdlib_records_go_through_the_same_pipeline_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import structlog

    from herald.core.logging import configure_logging

    try:
        configure_logging(json=True, level="info", cache=False)
        logging.getLogger("aiohttp.server").error("Error handling request %s", f"Bearer {JWT}")
        try:
            raise ValueError(f"b'GET /?token={JWT}'")
        except ValueError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
        structlog.get_logger("herald.test").info("test.event", header=f"Bearer {JWT}")
    finally:
        logging.getLogger().handlers = []
        logging.captureWarnings(False)
        structlog.reset_defaults()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 3, err
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert [e["event"] for e in events][0].startswith("Error handling request")
    assert events[0]["level"] == "error" and events[0]["logger"] == "aiohttp.server"
    assert "exception" in events[1]
    assert JWT not in err and "eyJ" not in err
