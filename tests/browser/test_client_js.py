"""The browser client `/client.js` in a real browser: resume after a dropped connection, recovery
after a server restart, and the SSE transport (including a server-sent `event: error`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import seconds
from tests.e2e.server import HeraldProcess

pytestmark = pytest.mark.browser

WAIT_MS = seconds(10) * 1000

#: Makes `window.client`: a HeraldClient with a demo token, subscribed to `channel`, recording the
#: data of every message of that channel in `window.got` and its lifecycle in `window.events`.
#: Resolves with the first `subscribed` reply (over SSE: once the stream is open). `jitter: false`
#: makes every backoff its full length (100, 200, 400 ... 1000 ms) instead of a random part of it.
START_CLIENT = """
async ({ user, channel, transport, jitter = true }) => {
  const { HeraldClient } = await import("/client.js");
  const res = await fetch(`/demo/token?user=${encodeURIComponent(user)}`);
  if (!res.ok) throw new Error(`demo token: HTTP ${res.status}`);
  const { token } = await res.json();
  window.got = [];
  window.events = [];
  const c = new HeraldClient({ token, transport, minDelayMs: 100, maxDelayMs: 1000,
                               random: jitter ? Math.random : () => 1 });
  window.client = c;
  c.on("message", (m) => { if (m.channel === channel) window.got.push(m.data); });
  c.on("state", (s) => window.events.push({ kind: "state", state: s.state, code: s.code ?? null }));
  c.on("subscribed", (f) => window.events.push({ kind: "subscribed", channel: f.channel, recovered: f.recovered,
                                                 missed: f.missed, epoch: f.epoch }));
  c.on("recovery", (r) => window.events.push({ kind: "recovery", channel: r.channel, recovered: r.recovered }));
  c.on("error", (e) => window.events.push({ kind: "error", code: e.code ?? null, message: e.message }));
  const subscribed = c.subscribe(channel);
  c.connect();
  return await subscribed;
}
"""


def _publish(server: HeraldProcess, channel: str, *values: int) -> list[str]:
    offsets = []
    for n in values:
        status, reply = server.api("POST", "/api/publish", {"channel": channel, "data": {"n": n}})
        assert status == 200, reply
        offsets.append(reply["offset"])
    return offsets


def _wait_got(page: Any, count: int) -> list[Any]:
    """Wait until `count` messages arrived; returns what arrived (possibly more, for the caller to check)."""
    try:
        page.wait_for_function("(n) => window.got.length >= n", arg=count, timeout=WAIT_MS)
    except Exception as exc:
        raise AssertionError(
            f"waited for {count} messages; got {page.evaluate('window.got')}, events {page.evaluate('window.events')}"
        ) from exc
    return page.evaluate("window.got")


#: What chromium logs when the server it talks to is killed and restarted; anything else is a problem.
SERVER_GONE = ("net::ERR_CONNECTION_REFUSED", "net::ERR_INCOMPLETE_CHUNKED_ENCODING", "net::ERR_EMPTY_RESPONSE")


def _unexpected(problems: list[str]) -> list[str]:
    return [p for p in problems if not any(gone in p for gone in SERVER_GONE)]


def _events(page: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate("window.events") if e["kind"] == kind]


def test_browser_client_resumes_across_server_restart_with_no_message_lost(
    servers: Any, herald: HeraldProcess, new_page: Any
) -> None:
    channel, user = "news:resume", "carol"
    page = new_page("carol")
    page.goto(herald.http + "/")
    # No jitter: the first reconnect waits 100 ms, so the publishes below surely land while it is away.
    first = page.evaluate(START_CLIENT, {"user": user, "channel": channel, "transport": "ws", "jitter": False})
    assert first["type"] == "subscribed" and first["channel"] == channel and first["recovered"] is False

    # (a) The server drops the connection (4008: reconnect and resume); nothing is lost or repeated.
    _publish(herald, channel, *range(5))
    assert _wait_got(page, 5) == [{"n": n} for n in range(5)]
    status, reply = herald.api("POST", "/api/disconnect", {"user": user, "code": 4008})
    assert (status, reply) == (200, {"disconnected": 1})
    _publish(herald, channel, *range(5, 10))  # while the client is away or coming back
    page.wait_for_function("() => window.events.filter((e) => e.kind === 'subscribed').length >= 2", timeout=WAIT_MS)
    assert _wait_got(page, 10) == [{"n": n} for n in range(10)]
    states = [(e["state"], e["code"]) for e in _events(page, "state")]
    assert ("disconnected", 4008) in states, states
    assert states[-1] == ("connected", None), states
    resumed = _events(page, "subscribed")[1]
    assert resumed["channel"] == channel and resumed["recovered"] is True, resumed
    assert resumed["epoch"] == first["epoch"]
    assert _events(page, "recovery") == [] and _events(page, "error") == []
    assert resumed["missed"] >= 1, resumed  # the resume really filled a gap

    # (b) The server restarts on the same port. The in-memory engine lost its history (new epoch),
    # so the client's resume must report recovered=false, then carry on with new messages.
    old_epoch = first["epoch"]
    herald = servers.restart_on_same_port(herald)
    try:
        page.wait_for_function("() => window.events.some((e) => e.kind === 'recovery')", timeout=WAIT_MS)
    except Exception as exc:
        raise AssertionError(f"no recovery event after the restart; events {page.evaluate('window.events')}") from exc
    assert _events(page, "recovery") == [{"kind": "recovery", "channel": channel, "recovered": False}]
    subs = _events(page, "subscribed")
    assert subs[-1]["channel"] == channel and subs[-1]["recovered"] is False
    assert subs[-1]["epoch"] != old_epoch
    assert page.evaluate("window.client.state") == "connected"
    states = [(e["state"], e["code"]) for e in _events(page, "state")]
    assert ("disconnected", 1006) in states and states[-1] == ("connected", None), states

    _publish(herald, channel, *range(10, 15))
    assert _wait_got(page, 15) == [{"n": n} for n in range(15)]
    assert page.evaluate("(ch) => window.client.channels.get(ch).epoch", channel) == subs[-1]["epoch"]
    assert _events(page, "error") == []
    # Reconnect attempts while the server is down are refused; chromium logs those, nothing else.
    assert _unexpected(new_page.problems) == []


def test_sse_fallback_transport_receives_messages(herald: HeraldProcess, new_page: Any) -> None:
    channel, user = "news:sse", "dave"
    page = new_page("dave")
    page.goto(herald.http + "/")
    opened = page.evaluate(START_CLIENT, {"user": user, "channel": channel, "transport": "sse"})
    assert opened == {"type": "subscribed", "channel": channel}
    assert page.evaluate("window.client.transport") == "sse"
    assert page.evaluate("window.client.state") == "connected"
    assert page.evaluate("[window.client._es !== null, window.client._ws === null]") == [True, True]
    assert [(e["state"], e["code"]) for e in _events(page, "state")] == [("connecting", None), ("connected", None)]

    _publish(herald, channel, *range(5))
    assert _wait_got(page, 5) == [{"n": n} for n in range(5)]
    assert _events(page, "error") == [] and _events(page, "recovery") == []
    assert list(new_page.problems) == []


def test_sse_error_event_is_reported_and_the_stream_recovers_from_a_restart(servers: Any, new_page: Any) -> None:
    """A server-sent `event: error` is a frame for "error" listeners, not a broken stream (EventSource
    also hands it to `onerror`); a real drop is retried by the browser, resuming with Last-Event-ID."""
    server = servers.start("--sse-retry-ms", "200")
    channel, user = "news:sse-restart", "erin"
    page = new_page("erin")
    page.goto(server.http + "/")
    page.evaluate(START_CLIENT, {"user": user, "channel": channel, "transport": "sse"})
    _publish(server, channel, 0, 1, 2)
    assert _wait_got(page, 3) == [{"n": n} for n in range(3)]

    # What the server writes when setting up a channel fails (node/sse.py): `event: error`.
    page.evaluate("""() => window.client._es.dispatchEvent(new MessageEvent("error",
        { data: JSON.stringify({ type: "error", code: 503, message: "engine unavailable" }) }))""")
    assert _events(page, "error") == [{"kind": "error", "code": 503, "message": "engine unavailable"}]
    assert page.evaluate("window.client.state") == "connected"
    _publish(server, channel, 3, 4)
    assert _wait_got(page, 5) == [{"n": n} for n in range(5)]

    # A restart: the browser reconnects on its own, the new epoch is reported, new messages flow.
    server = servers.restart_on_same_port(server)
    try:
        page.wait_for_function(
            "(ch) => window.events.some((e) => e.kind === 'recovery' && e.channel === ch)", arg=channel, timeout=WAIT_MS
        )
    except Exception as exc:
        raise AssertionError(f"no recovery event after the restart; events {page.evaluate('window.events')}") from exc
    assert page.evaluate("window.client.state") == "connected"
    _publish(server, channel, 5, 6, 7)
    assert _wait_got(page, 8) == [{"n": n} for n in range(8)]
    states = [e["state"] for e in _events(page, "state")]
    assert states[-2:] == ["connecting", "connected"] and "disconnected" not in states, states
    assert len(_events(page, "error")) == 1
    assert _unexpected(new_page.problems) == []
