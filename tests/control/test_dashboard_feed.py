"""The dashboard's live feed (control/dashboard.py): the leader publishes each cluster view to the
cluster channel, bounded by the message size; `GET /dashboard/token` mints a short-lived token that
may subscribe to that channel and nothing else, or says why it cannot; the page's CSP admits the
feed's URL and control serves client.js. The control app runs in-process on a real port with the
MemoryEngine; what a token may do is checked against a real `herald dev`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Any

import jwt
import pytest
import websockets
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from herald.control.app import build_control_app
from herald.control.dashboard import CLUSTER_CHANNEL, DASHBOARD_USER, TOKEN_TTL
from herald.control.service import Control, ControlSettings
from herald.core.auth import Authenticator
from herald.core.config import NodeConfig, load_node_config
from herald.core.engine.memory import MemoryEngine
from herald.core.protocol.errors import ConfigError
from tests.conftest import seconds
from tests.e2e.clients import WsClient
from tests.e2e.server import HeraldProcess, start_herald

SECRET = "a-test-secret-of-thirty-two-bytes"
KEY = "admin-key"
FEED_URL = "https://herald.example.com/rt"


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _views(engine: MemoryEngine) -> list[dict[str, Any]]:
    return [m.data for m in (await engine.history(CLUSTER_CHANNEL)).messages]


# --- publishing (service.py) ----------------------------------------------------------------------


async def test_only_the_leader_publishes_the_view_and_a_standby_does_once_it_leads() -> None:
    clock = Clock()
    engine = MemoryEngine(clock=clock)
    settings = ControlSettings(lease_seconds=5.0, auto_rebalance=False)
    first, second = (Control(engine, settings, ident, clock=clock) for ident in ("one", "two"))
    for _ in range(3):
        await first.tick()
        await second.tick()
        clock.now += 1.0
    views = await _views(engine)
    assert [v["leader"] for v in views] == ["one"] * 3
    assert views[-1] == first.latest and {m["member"] for m in views[-1]["members"]} == {"control:one", "control:two"}
    clock.now += 5.0  # the leader stopped ticking: its lease lapsed
    await second.tick()
    assert second.is_leader
    assert [v["leader"] for v in await _views(engine)] == ["one"] * 3 + ["two"]


async def test_a_view_over_the_message_size_goes_out_without_its_members_with_one_warning() -> None:
    clock = Clock()
    engine = MemoryEngine(clock=clock)
    control = Control(engine, ControlSettings(max_message_size=2_000, auto_rebalance=False), "one", clock=clock)
    for i in range(10):
        await engine.heartbeat(
            f"node:n{i}", {"role": "node", "id": f"n{i}", "state": "ready", "connections": {"ws": i, "sse": 0}}
        )
    with capture_logs() as logs:
        for _ in range(3):
            await control.tick()
            clock.now += 1.0
    views = await _views(engine)
    assert len(views) == 3 and len(json.dumps(control.latest)) > 2_000
    for view in views:
        assert view["trimmed"] is True and view["members"] == [] and len(json.dumps(view)) <= 2_000
        assert view["totals"]["connections"] == sum(range(10)) and view["leader"] == "one"
    assert [e for e in logs if e["event"] == "control.view.trimmed"] == [
        {"event": "control.view.trimmed", "log_level": "warning", "members": 11, "limit": 2_000}
    ]


# --- the token endpoint, CSP and client.js (app.py) ---------------------------------------------------


def _config(**kw: Any) -> NodeConfig:
    return NodeConfig(**{"api_key": KEY, "jwt_secret": SECRET, "dashboard_url": FEED_URL, **kw})


@pytest.fixture
async def control_client(request: pytest.FixtureRequest) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The control app of `_config(**param)` on a real ephemeral port."""
    config = _config(**getattr(request, "param", {}))
    async with TestClient(TestServer(build_control_app(config, MemoryEngine()))) as client:
        yield client


async def _token(client: TestClient[web.Request, web.Application], **headers: str) -> tuple[int, Any]:
    resp = await client.get("/dashboard/token", headers=headers)
    return resp.status, await resp.json()


async def test_the_token_needs_the_api_key_or_a_session(
    control_client: TestClient[web.Request, web.Application],
) -> None:
    assert (await _token(control_client))[0] == 401
    status, body = await _token(control_client, Authorization="apikey wrong")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert (await _token(control_client, Authorization=f"apikey {KEY}"))[0] == 200
    signed_in = await control_client.post("/dashboard/session", json={"key": KEY})
    assert signed_in.status == 204
    assert (await _token(control_client))[0] == 200  # the session cookie


async def test_the_token_may_only_subscribe_to_the_cluster_channel_for_ten_minutes(
    control_client: TestClient[web.Request, web.Application],
) -> None:
    resp = await control_client.get("/dashboard/token", headers={"Authorization": f"apikey {KEY}"})
    body = await resp.json()
    assert resp.headers["Cache-Control"] == "no-store"
    assert body["url"] == FEED_URL and body["channel"] == CLUSTER_CHANNEL == "herald:cluster"
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims == {
        "sub": DASHBOARD_USER,
        "iat": claims["iat"],
        "exp": body["exp"],
        "channels": ["herald:cluster"],
        "publish": [],
    }
    assert claims["exp"] - claims["iat"] == TOKEN_TTL == 600 and abs(claims["iat"] - time.time()) < 60


@pytest.mark.parametrize("control_client", [{"jwt_audience": "app", "jwt_issuer": "https://auth"}], indirect=True)
async def test_the_token_carries_the_configured_audience_and_issuer(
    control_client: TestClient[web.Request, web.Application],
) -> None:
    _, body = await _token(control_client, Authorization=f"apikey {KEY}")
    config = _config(jwt_audience="app", jwt_issuer="https://auth")
    principal = Authenticator(config.jwt).verify(body["token"], time.time())  # what a node checks
    assert principal.user == DASHBOARD_USER and principal.may_subscribe("herald:cluster")
    assert not principal.may_subscribe("herald:other") and not principal.may_publish("herald:cluster")


@pytest.mark.parametrize(
    ("control_client", "reason"),
    [
        ({"jwt_algorithm": "ES256", "jwt_secret": None, "jwt_public_key": "es256.pem"}, "cannot sign ES256"),
        ({"jwt_algorithm": "RS256", "jwt_secret": None, "jwks_file": "jwks.json"}, "cannot sign RS256"),
        ({"dashboard_url": None}, "no --dashboard-url"),
    ],
    indirect=["control_client"],
    ids=["es256", "rs256", "no-url"],
)
async def test_without_a_signing_key_or_a_url_the_answer_says_why_and_the_csp_stays_on_self(
    control_client: TestClient[web.Request, web.Application], reason: str
) -> None:
    status, body = await _token(control_client, Authorization=f"apikey {KEY}")
    assert status == 200 and body["token"] is None and reason in body["reason"]
    assert body["channel"] == "herald:cluster" and "exp" not in body
    page = await control_client.get("/dashboard")
    assert page.headers["Content-Security-Policy"].endswith("; connect-src 'self'")


@pytest.mark.parametrize(
    ("control_client", "sources"),
    [
        ({}, "'self' https://herald.example.com wss://herald.example.com"),
        ({"dashboard_url": "http://10.0.0.5:8000"}, "'self' http://10.0.0.5:8000 ws://10.0.0.5:8000"),
    ],
    indirect=["control_client"],
    ids=["https", "http"],
)
async def test_the_dashboard_csp_admits_the_feed_url_and_control_serves_client_js(
    control_client: TestClient[web.Request, web.Application], sources: str
) -> None:
    page = await control_client.get("/dashboard")
    csp = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";"))
    assert csp["connect-src"] == sources and csp["script-src"].startswith("'self'")
    assert 'import { HeraldClient } from "/client.js"' in await page.text()
    script = await control_client.get("/client.js")
    assert script.content_type == "text/javascript"
    assert await script.read() == (resources.files("herald.node") / "static" / "client.js").read_bytes()


def test_the_dashboard_url_is_an_option_of_its_own_and_must_be_http() -> None:
    config = load_node_config(
        {}, {"HERALD_DASHBOARD_URL": FEED_URL, "HERALD_API_KEY": KEY, "HERALD_JWT_SECRET": SECRET}
    )
    assert config.dashboard_url == FEED_URL
    for bad in ("wss://herald.example.com", "herald.example.com", "https://a b", "https://x;script-src *"):
        with pytest.raises(ConfigError, match="--dashboard-url"):
            _config(dashboard_url=bad)


# --- what the token grants on a node (a real `herald dev`) ---------------------------------------------


@pytest.fixture(scope="module")
def herald() -> Iterator[HeraldProcess]:
    server = start_herald()
    yield server
    server.stop()


async def test_a_dashboard_token_receives_the_cluster_view_and_is_refused_anything_else(herald: HeraldProcess) -> None:
    status, body = herald.api("GET", "/dashboard/token")
    assert status == 200 and body["url"] is None  # herald dev: the page's own origin
    conn = await websockets.connect(
        f"{herald.ws}?token={body['token']}", subprotocols=["herald.json"], open_timeout=seconds(10)
    )
    client = WsClient(conn)
    try:
        connected = await client.recv()
        assert connected["user"] == DASHBOARD_USER and connected["channels"] == [f"user:{DASHBOARD_USER}"]
        reply, _ = await client.request({"type": "subscribe", "channel": "herald:cluster"})
        assert reply["type"] == "subscribed"
        (view,) = await client.messages(1, "herald:cluster", timeout=5.0)
        assert {m["role"] for m in view["data"]["members"]} == {"node", "control"} and view["data"]["leader"]
        for request in (
            {"type": "subscribe", "channel": "room:lobby"},
            {"type": "subscribe", "channel": "herald:other"},
            {"type": "publish", "channel": "herald:cluster", "data": {"forged": True}},
            {"type": "publish", "channel": "room:lobby", "data": "hi"},
        ):
            reply, _ = await client.request(request)
            assert reply["type"] == "error" and reply["code"] == 403, (request, reply)
        reply, _ = await client.request({"type": "ping"})
        assert reply["type"] == "pong"  # still open
    finally:
        await client.close()
