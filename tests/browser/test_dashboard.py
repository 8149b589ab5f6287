"""The ops dashboard (`herald control` at /dashboard) in a real browser, on a small real cluster:
one redis-server, a router, two nodes, a control replica, clients connected and a publisher
running. The operator signs in with the API key, sees every member and live numbers, drains a node
with its button and watches its clients move to the other node.

The page is a Herald client: its live updates come from the cluster channel through a node
(client.js, a token minted by control), here and under `herald dev` (its own origin, token renewal);
control's own SSE stream is only its fallback, when control cannot mint (ES256 here)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.cluster.conftest import API_KEY, Cluster
from tests.conftest import make_token, seconds
from tests.e2e.server import HeraldProcess, start_herald

pytestmark = pytest.mark.browser

CLIENTS = 20
CHANNEL = "news:dashboard"


class Load:
    """CLIENTS WebSocket clients (half on each node) that move to another node when theirs closes
    them, and a publisher posting to CHANNEL every 100 ms — on an event loop in a thread, so the
    sync Playwright API drives the browser meanwhile. Bounded: stops at `stop()` or after 120 s."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stopping: asyncio.Event | None = None
        self.received = 0
        self.tasks: list[Any] = []

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._main(), self.loop).result(timeout=seconds(30))

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        connected = [asyncio.Event() for _ in range(CLIENTS)]
        self.tasks = [asyncio.ensure_future(self._client(i, connected[i])) for i in range(CLIENTS)]
        self.tasks.append(asyncio.ensure_future(self._publisher()))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in connected)), seconds(20))

    async def _client(self, i: int, connected: asyncio.Event) -> None:
        assert self.stopping is not None
        token = make_token(f"viewer{i}", channels=["news:*"])
        nodes = itertools.cycle(self.cluster.nodes[i % 2 :] + self.cluster.nodes[: i % 2])
        deadline = self.loop.time() + seconds(120)
        while not self.stopping.is_set() and self.loop.time() < deadline:
            node = next(nodes)
            if not node.alive or node.readyz()[0] != 200:
                await asyncio.sleep(0.1)
                continue
            try:
                async with websockets.connect(
                    f"{node.ws}?token={token}", subprotocols=["herald.json"], open_timeout=5
                ) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": CHANNEL}))
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg.get("type") == "subscribed":
                            connected.set()
                        elif msg.get("channel") == CHANNEL and "offset" in msg and msg.get("type") != "subscribed":
                            self.received += 1
            except (TimeoutError, OSError, websockets.WebSocketException):
                pass
            await asyncio.sleep(0.05)

    async def _publisher(self) -> None:
        assert self.stopping is not None
        for n in range(1200):  # at most 2 minutes
            if self.stopping.is_set():
                return
            live = [m for m in self.cluster.nodes if m.alive]
            await asyncio.to_thread(
                live[n % len(live)].api, "POST", "/api/publish", {"channel": CHANNEL, "data": {"n": n}}
            )
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        async def halt() -> None:
            assert self.stopping is not None
            self.stopping.set()
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(halt(), self.loop).result(timeout=seconds(20))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=seconds(10))
        self.loop.close()


def _free_port() -> int:
    """A port nobody listens on now (the control's: its origin goes into the nodes' allowed origins)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def small_cluster() -> Iterator[tuple[Cluster, HeraldProcess]]:
    """The nodes admit the dashboard's origin (the control's); the dashboard connects to the second
    node (in production: the ingress URL), which the test never drains."""
    port = _free_port()
    cluster = Cluster(
        shards=1,
        routers=1,
        nodes=2,
        partitions=8,
        node_args=("--drain-window", "3", "--allowed-origins", f"http://127.0.0.1:{port}"),
    )
    cluster.start()
    control = start_herald(
        "--node-id",
        "control-1",
        "--member-timeout",
        "3",
        "--port",
        str(port),
        "--dashboard-url",
        cluster.nodes[1].http,
        command="control",
        env=cluster.env,
    )
    try:
        yield cluster, control
    finally:
        control.stop()
        cluster.stop()


def _cluster_doc(control: HeraldProcess) -> dict[str, Any]:
    req = urllib.request.Request(control.http + "/admin/cluster", headers={"Authorization": f"apikey {API_KEY}"})
    with urllib.request.urlopen(req, timeout=seconds(5)) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_dashboard_shows_the_cluster_and_drains_a_node(
    small_cluster: tuple[Cluster, HeraldProcess], new_page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    cluster, control = small_cluster
    first, second = cluster.nodes
    load = Load(cluster)
    load.start()
    try:
        page = new_page("operator")
        requests: list[str] = []
        sockets: list[str] = []
        frames: list[str] = []
        page.on("request", lambda r: requests.append(r.url))

        def on_websocket(ws: Any) -> None:
            sockets.append(ws.url)
            ws.on("framereceived", lambda frame: frames.append(str(frame)))

        page.on("websocket", on_websocket)
        page.goto(control.http + "/dashboard")

        # Signed out: the page shows the sign-in form and no data; a wrong key is refused.
        expect(page.get_by_test_id("login")).to_be_visible()
        expect(page.locator("#main")).to_be_hidden()
        page.get_by_test_id("key").fill("not-the-key")
        page.get_by_test_id("sign-in").click()
        expect(page.locator("#login-error")).to_have_text("wrong API key")

        page.get_by_test_id("key").fill(API_KEY)
        page.get_by_test_id("sign-in").click()
        # Connected with client.js to the second node, subscribed to the cluster channel.
        expect(page.locator("#conn")).to_have_attribute("data-feed", "herald")
        expect(page.locator("#conn")).to_have_text("live")
        assert {url.split("?")[0] for url in sockets} == {second.ws}
        assert f"{control.http}/client.js" in requests

        # Every member, with its role and state; the totals add up (the dashboard is a connection too).
        rows = page.locator("#members tr")
        for member in (f"node:{first.id}", f"node:{second.id}", f"router:{cluster.routers[0].id}", "control:control-1"):
            expect(page.locator(f'#members tr[data-member="{member}"]')).to_have_attribute("data-state", "ready")
        expect(rows).to_have_count(4)
        expect(page.get_by_test_id("leader")).to_have_text("leader control-1")
        expect(page.get_by_test_id("nodes-ready")).to_have_text("2 / 2")
        expect(page.get_by_test_id("connections")).to_have_text(str(CLIENTS + 1))
        per_node = page.locator('#members tr[data-member^="node:"] [data-testid="node-connections"]')
        expect(per_node.nth(0)).to_contain_text(str(CLIENTS // 2))
        expect(per_node.nth(1)).to_contain_text(str(CLIENTS // 2 + 1))
        # Live rates: deliveries flow (10 publications/s to 20 subscribers), and latency is measured.
        page.wait_for_function(
            "() => parseFloat(document.querySelector('#c-out').textContent.replace(/,/g, '')) > 20",
            timeout=seconds(15) * 1000,
        )
        expect(page.get_by_test_id("latency")).to_contain_text("ms")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # Drain the first node with its button: it turns draining/drained, its clients move over;
        # the page learns it from the cluster channel (it never opens /dashboard/events nor polls).
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator(f'#members tr[data-member="node:{first.id}"] [data-testid="drain"]').click()
        expect(page.get_by_test_id("toast")).to_have_text(f"{first.id} is draining")
        expect(page.locator(f'#members tr[data-member="node:{first.id}"]')).to_have_attribute(
            "data-state", re.compile("draining|drained")
        )
        expect(page.get_by_test_id("nodes-ready")).to_have_text("1 / 2")
        expect(
            page.locator(f'#members tr[data-member="node:{second.id}"] [data-testid="node-connections"]')
        ).to_contain_text(str(CLIENTS + 1), timeout=seconds(20) * 1000)
        expect(page.locator(f'#members tr[data-member="node:{first.id}"]')).to_have_attribute("data-state", "drained")
        page.screenshot(path=str(tmp_path / "dashboard-drained.png"), full_page=True)

        # The API agrees with what the page showed.
        doc = _cluster_doc(control)
        states = {m["id"]: m["state"] for m in doc["members"]}
        assert states[first.id] == "drained" and states[second.id] == "ready"
        assert doc["totals"]["connections"] == CLIENTS + 1
        assert not [url for url in requests if "/dashboard/events" in url]
        assert [url for url in requests if url.endswith("/admin/cluster")] == [f"{control.http}/admin/cluster"]
        assert sum('"channel":"herald:cluster"' in frame for frame in frames) > 5

        # Rebalance with one ready node: nothing to do, and the page says so.
        page.get_by_test_id("rebalance").click()
        expect(page.get_by_test_id("toast")).to_contain_text("already balanced")

        # Signing out ends the session: the stream stops and the sign-in form is back.
        page.locator("#logout").click()
        expect(page.get_by_test_id("login")).to_be_visible()
        assert page.context.cookies() == []
        # The one error the browser logged is the refused wrong key.
        problems = new_page.problems  # type: ignore[attr-defined]
        assert len(problems) == 1 and "401" in problems[0] and "/dashboard/session" in problems[0], problems
        assert load.received > 0
        assert "eyJ" not in control.output(), "a token was logged"
    finally:
        load.stop()


def _sign_in(page: Any, server: HeraldProcess) -> None:
    page.goto(server.http + "/dashboard")
    page.get_by_test_id("key").fill(API_KEY)
    page.get_by_test_id("sign-in").click()


def test_under_herald_dev_the_dashboard_follows_the_cluster_channel_on_its_own_origin(
    herald: HeraldProcess, new_page: Any
) -> None:
    """No --dashboard-url: the page connects to its own origin (the node of `herald dev`), a client
    connecting elsewhere shows up live, through the channel, and before its token runs out the
    page fetches a new one and sends it as a `refresh` (the page's clock is moved on 10 minutes)."""
    from playwright.sync_api import expect
    from websockets.sync.client import connect

    page = new_page("operator")
    page.clock.install()  # real time flows until fast_forward() jumps it
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    with page.expect_websocket() as opened:
        _sign_in(page, herald)
    feed_socket = opened.value
    assert feed_socket.url.startswith(herald.ws + "?token=")
    expect(page.locator("#conn")).to_have_attribute("data-feed", "herald")
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.get_by_test_id("connections")).to_have_text("1")  # the dashboard itself
    with connect(
        f"{herald.ws}?token={make_token('watcher')}", subprotocols=["herald.json"], open_timeout=seconds(10)
    ) as ws:
        assert json.loads(ws.recv(timeout=seconds(10)))["type"] == "connected"
        expect(page.get_by_test_id("connections")).to_have_text("2")
    expect(page.get_by_test_id("connections")).to_have_text("1")

    tokens = [url for url in requests if url.endswith("/dashboard/token")]
    assert tokens == [f"{herald.http}/dashboard/token"]
    with feed_socket.expect_event("framereceived", lambda payload: '"type":"refreshed"' in str(payload)):
        page.clock.fast_forward("09:50")  # client.js renews 30 s before the 10-minute expiry
    assert len([url for url in requests if url.endswith("/dashboard/token")]) >= 2
    expect(page.locator("#conn")).to_have_text("live")
    assert not feed_socket.is_closed()
    assert not [url for url in requests if "/dashboard/events" in url]
    assert new_page.problems == []  # type: ignore[attr-defined]


def test_when_control_cannot_mint_a_token_the_dashboard_falls_back_to_its_sse_stream(
    servers: Any, new_page: Any, tmp_path: Path
) -> None:
    """ES256: control holds only the public key; the page says it is live from /dashboard/events."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from playwright.sync_api import expect

    public = tmp_path / "public.pem"
    public.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    server = servers.start("--jwt-algorithm", "ES256", "--jwt-public-key", str(public))
    page = new_page("operator")
    requests: list[str] = []
    sockets: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    _sign_in(page, server)
    expect(page.locator("#conn")).to_have_attribute("data-feed", "sse")
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator('#members tr[data-member^="control:"]')).to_have_attribute("data-state", "ready")
    assert f"{server.http}/dashboard/events" in requests and sockets == []
    page.locator("#logout").click()
    expect(page.get_by_test_id("login")).to_be_visible()
    assert new_page.problems == []  # type: ignore[attr-defined]
