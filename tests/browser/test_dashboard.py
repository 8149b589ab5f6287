"""The ops dashboard (`herald control` at /dashboard) in a real browser, on a small real cluster:
one redis-server, a router, two nodes, a control replica, clients connected and a publisher
running. The operator signs in with the API key, sees every member and live numbers, drains a node
with its button and watches its clients move to the other node."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
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
        nodes = itertools.cycle(self.cluster.nodes[i % 2:] + self.cluster.nodes[:i % 2])
        deadline = self.loop.time() + seconds(120)
        while not self.stopping.is_set() and self.loop.time() < deadline:
            node = next(nodes)
            if not node.alive or node.readyz()[0] != 200:
                await asyncio.sleep(0.1)
                continue
            try:
                async with websockets.connect(f"{node.ws}?token={token}", subprotocols=["herald.json"],
                                              open_timeout=5) as ws:
                    await ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": CHANNEL}))
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg.get("type") == "subscribed":
                            connected.set()
                        elif msg.get("channel") == CHANNEL and "offset" in msg and msg.get("type") != "subscribed":
                            self.received += 1
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)

    async def _publisher(self) -> None:
        assert self.stopping is not None
        for n in range(1200):  # at most 2 minutes
            if self.stopping.is_set():
                return
            live = [m for m in self.cluster.nodes if m.alive]
            await asyncio.to_thread(live[n % len(live)].api, "POST", "/api/publish", {"channel": CHANNEL, "data": {"n": n}})
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


@pytest.fixture
def small_cluster() -> Iterator[tuple[Cluster, HeraldProcess]]:
    cluster = Cluster(shards=1, routers=1, nodes=2, partitions=8, node_args=("--drain-window", "3"))
    cluster.start()
    control = start_herald("--node-id", "control-1", "--member-timeout", "3", command="control", env=cluster.env)
    try:
        yield cluster, control
    finally:
        control.stop()
        cluster.stop()


def _cluster_doc(control: HeraldProcess) -> dict[str, Any]:
    req = urllib.request.Request(control.http + "/admin/cluster", headers={"Authorization": f"apikey {API_KEY}"})
    with urllib.request.urlopen(req, timeout=seconds(5)) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_dashboard_shows_the_cluster_and_drains_a_node(small_cluster: tuple[Cluster, HeraldProcess],
                                                        new_page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    cluster, control = small_cluster
    first, second = cluster.nodes
    load = Load(cluster)
    load.start()
    try:
        page = new_page("operator")
        page.goto(control.http + "/dashboard")

        # Signed out: the page shows the sign-in form and no data; a wrong key is refused.
        expect(page.get_by_test_id("login")).to_be_visible()
        expect(page.locator("#main")).to_be_hidden()
        page.get_by_test_id("key").fill("not-the-key")
        page.get_by_test_id("sign-in").click()
        expect(page.locator("#login-error")).to_have_text("wrong API key")

        page.get_by_test_id("key").fill(API_KEY)
        page.get_by_test_id("sign-in").click()
        expect(page.locator("#conn")).to_have_text("live")

        # Every member, with its role and state; the totals add up.
        rows = page.locator("#members tr")
        for member in (f"node:{first.id}", f"node:{second.id}", f"router:{cluster.routers[0].id}", "control:control-1"):
            expect(page.locator(f'#members tr[data-member="{member}"]')).to_have_attribute("data-state", "ready")
        expect(rows).to_have_count(4)
        expect(page.get_by_test_id("leader")).to_have_text("leader control-1")
        expect(page.get_by_test_id("nodes-ready")).to_have_text("2 / 2")
        expect(page.get_by_test_id("connections")).to_have_text(str(CLIENTS))
        per_node = page.locator('#members tr[data-member^="node:"] [data-testid="node-connections"]')
        expect(per_node.nth(0)).to_contain_text(str(CLIENTS // 2))
        expect(per_node.nth(1)).to_contain_text(str(CLIENTS // 2))
        # Live rates: deliveries flow (10 publications/s to 20 subscribers), and latency is measured.
        page.wait_for_function("() => parseFloat(document.querySelector('#c-out').textContent.replace(/,/g, '')) > 20",
                               timeout=seconds(15) * 1000)
        expect(page.get_by_test_id("latency")).to_contain_text("ms")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # Drain the first node with its button: it turns draining/drained, its clients move over.
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator(f'#members tr[data-member="node:{first.id}"] [data-testid="drain"]').click()
        expect(page.get_by_test_id("toast")).to_have_text(f"{first.id} is draining")
        expect(page.locator(f'#members tr[data-member="node:{first.id}"]')).to_have_attribute(
            "data-state", re.compile("draining|drained"))
        expect(page.get_by_test_id("nodes-ready")).to_have_text("1 / 2")
        expect(page.locator(f'#members tr[data-member="node:{second.id}"] [data-testid="node-connections"]')
               ).to_contain_text(str(CLIENTS), timeout=seconds(20) * 1000)
        expect(page.locator(f'#members tr[data-member="node:{first.id}"]')).to_have_attribute("data-state", "drained")
        page.screenshot(path=str(tmp_path / "dashboard-drained.png"), full_page=True)

        # The API agrees with what the page showed.
        doc = _cluster_doc(control)
        states = {m["id"]: m["state"] for m in doc["members"]}
        assert states[first.id] == "drained" and states[second.id] == "ready"
        assert doc["totals"]["connections"] == CLIENTS

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
    finally:
        load.stop()
