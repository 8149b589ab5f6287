"""A rolling upgrade of the nodes, simulated with real processes exactly as the chart configures
it, under a steady publish load: no message lost or duplicated, every client ends up connected,
and the reconnect rate stays what the drain window promises.

The pieces, each standing in for its Kubernetes counterpart:

* one redis-server, one router and N=3 `herald node` processes (tests/cluster/conftest.py `Cluster`);
* `ReadyProxy`, a round-robin TCP proxy that only routes to nodes whose /readyz answers 200 and
  drops a node as soon as it is being deleted — a Service's endpoints (a terminating pod is not
  ready);
* the Deployment's RollingUpdate with maxSurge 1 / maxUnavailable 0 / minReadySeconds: start a new
  node, wait until it is ready plus MIN_READY, then delete one old node — and go on with the next
  new node at once, since a Deployment does not wait for terminating pods (so drains may overlap);
* pod deletion as the kubelet does it: the preStop hook `herald drain --url http://127.0.0.1:<port>`,
  then SIGTERM, and the process must be gone within the grace period (preStop delay + drain window
  + margin, here scaled down: the chart's template computes the same sum);
* resuming WebSocket clients behind the proxy (tests/cluster/checker.py `ResumingClient`: subscribe
  with `since` {offset, epoch} after every reconnect), checked by `check_no_loss`.

The control plane is not started: its rebalancing would shed connections on its own and blur the
reconnect-rate measurement, which is about drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.cluster.checker import (
    Publisher,
    ResumingClient,
    check_no_loss,
    eventually,
    running,
    steady_load,
    wait_delivered,
)
from tests.cluster.conftest import API_KEY, Cluster, Member
from tests.conftest import seconds

NODES = 3
CLIENTS = 150
CHANNELS = [f"room:roll{i}" for i in range(10)]
RATE = 50.0  # publishes per second, all channels together
LOAD_ROUND = 2.0  # seconds per round of steady load (it runs until the rollout is over)
DRAIN_WINDOW = 3.0  # node.drainWindow (HERALD_DRAIN_WINDOW), scaled down from the chart's 30 s
MIN_READY = 2.0  # node.minReadySeconds, scaled down from 20 s (the same share of the drain window)
PRESTOP_DELAY = 0.0  # node.preStopDelaySeconds: the proxy drops a deleted node at once, nothing to wait for
# node.terminationMarginSeconds, scaled down from 15 s; it also covers the hook's own start (about
# 1 s of Python imports for `herald drain`, more on a loaded 2-CPU machine) and the process exit.
GRACE_MARGIN = 6.0
GRACE = PRESTOP_DELAY + math.ceil(DRAIN_WINDOW) + GRACE_MARGIN  # terminationGracePeriodSeconds
BUCKET = 1.0  # seconds per reconnect-rate bucket
BUCKET_TOLERANCE = 5  # reconnects per bucket for bucket edges and a retry or two


class ReadyProxy:
    """Round-robin TCP proxy on 127.0.0.1 over the backends whose /readyz answers 200."""

    def __init__(self, poll_interval: float = 0.1) -> None:
        self.poll_interval = poll_interval
        self.backends: dict[str, int] = {}  # member id -> port
        self.ready: list[str] = []
        self.open: dict[str, int] = {}  # member id -> open client connections
        self.accepted: list[float] = []  # monotonic time of each client connection
        self.no_backend = 0
        self.port = 0
        self._rr = itertools.count()
        self._server: asyncio.Server | None = None
        self._poller: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def add(self, member: Member) -> None:
        """A new pod: routed to once its readiness probe passes."""
        self.backends[member.id] = member.proc.port
        self.open.setdefault(member.id, 0)

    def remove(self, member: Member) -> None:
        """A pod being deleted: out of the endpoints at once (terminating is not ready)."""
        self.backends.pop(member.id, None)
        self.ready = [b for b in self.ready if b != member.id]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5))
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        await self._probe()
        self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _ready(self, port: int) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _probe(self) -> None:
        backends = dict(self.backends)
        results = await asyncio.gather(*(self._ready(port) for port in backends.values()))
        self.ready = [b for b, ok in zip(backends, results, strict=True) if ok and b in self.backends]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self._probe()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        if not self.ready:
            self.no_backend += 1
            client_w.close()
            return
        backend = self.ready[next(self._rr) % len(self.ready)]
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.backends[backend])
        except (OSError, KeyError):
            self.no_backend += 1
            client_w.close()
            return
        self.open[backend] += 1
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        finally:
            self.open[backend] -= 1
            self._pipes.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@dataclass
class Deletion:
    """One old node's deletion: preStop + SIGTERM, timed like the kubelet would."""

    node: str
    connections: int  # client connections it held when it left the endpoints
    started: float
    ended: float = 0.0
    exit_code: int | None = None
    prestop: str = ""
    prestop_seconds: float = 0.0  # the preStop hook's run time
    exit_seconds: float = 0.0  # from SIGTERM to the process's exit
    notes: list[str] = field(default_factory=list)


async def delete_pod(cluster: Cluster, proxy: ReadyProxy, member: Member) -> Deletion:
    proxy.remove(member)
    deletion = Deletion(member.id, proxy.open.get(member.id, 0), time.monotonic())
    deadline = deletion.started + seconds(GRACE)
    if PRESTOP_DELAY:
        await asyncio.sleep(PRESTOP_DELAY)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}, "HERALD_API_KEY": API_KEY}
    hook = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald",
        "drain",
        "--url",
        member.http,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(hook.communicate(), max(0.1, deadline - time.monotonic()))
        deletion.prestop = f"exit {hook.returncode}: {out.decode(errors='replace').strip()[-300:]}"
    except TimeoutError:
        hook.kill()
        await hook.wait()
        deletion.prestop = "killed at the end of the grace period"
    sigterm = time.monotonic()
    deletion.prestop_seconds = sigterm - deletion.started
    member.proc.terminate(signal.SIGTERM)
    try:
        left = max(0.1, deadline - time.monotonic()) / seconds(1)  # HeraldProcess.wait scales it again
        deletion.exit_code = await asyncio.to_thread(member.proc.wait, left)
    except Exception:
        deletion.notes.append(
            "SIGKILL: still running at the end of the grace period; its last log lines:\n"
            + "".join(member.proc.log_lines[-15:])
            + _stacks(member.proc.proc.pid)
        )
        member.proc.terminate(signal.SIGKILL)
        deletion.exit_code = await asyncio.to_thread(member.proc.wait, 10)
    deletion.ended = time.monotonic()
    deletion.exit_seconds = deletion.ended - sigterm
    return deletion


def _stacks(pid: int) -> str:
    """The stuck process's Python stacks, when py-spy is installed (a diagnostic only)."""
    if shutil.which("py-spy") is None:
        return ""
    out = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30)
    return "\npy-spy dump:\n" + out.stdout + out.stderr


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(shards=1, routers=1, nodes=NODES, node_args=("--drain-window", str(DRAIN_WINDOW)))
    try:
        yield c.start()
    finally:
        c.stop()


@contextlib.asynccontextmanager
async def proxied(cluster: Cluster) -> AsyncIterator[ReadyProxy]:
    proxy = ReadyProxy()
    for member in cluster.nodes:
        proxy.add(member)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def reconnect_rates(accepted: list[float], deletions: list[Deletion], since: float) -> list[tuple[float, int, float]]:
    """(bucket start, reconnects in it, allowed) for each BUCKET-second bucket from `since`: the
    allowance is 2 x connections / drain window per second for each node draining in the bucket."""
    end = max(d.ended for d in deletions) + BUCKET
    out = []
    for b in range(math.ceil((end - since) / BUCKET)):
        lo, hi = since + b * BUCKET, since + (b + 1) * BUCKET
        n = sum(1 for t in accepted if lo <= t < hi)
        draining = [d for d in deletions if d.started < hi and d.ended > lo]
        allowed = sum(2 * d.connections / DRAIN_WINDOW for d in draining) * BUCKET + BUCKET_TOLERANCE
        out.append((lo - since, n, allowed))
    return out


async def test_rolling_upgrade_loses_nothing_and_paces_reconnects(cluster: Cluster) -> None:
    """Replace the 3 nodes one at a time the way the chart's Deployment does while 150 clients
    hold connections through the proxy and the router publishes 50 msg/s: every acknowledged
    message reaches every subscriber exactly once and in order, every client ends on a new node,
    every old node exits within its grace period, and no second sees more reconnects than
    2 x (connections draining / drain window)."""
    old = list(cluster.nodes)
    async with proxied(cluster) as proxy:
        clients = [
            ResumingClient([proxy.ws], f"roll{i}", [CHANNELS[i % len(CHANNELS)]], max_attempts=200)
            for i in range(CLIENTS)
        ]
        async with running(clients, timeout=30), Publisher([r.http for r in cluster.routers]) as pub:
            spread = {m.id: proxy.open[m.id] for m in old}
            assert sum(spread.values()) == CLIENTS and min(spread.values()) >= CLIENTS // NODES - 5, spread
            rollout_done = asyncio.Event()

            async def publish_until_rollout_done() -> None:
                """Steady load in 2 s rounds (per-channel order kept), until one round after the rollout."""
                for n in itertools.count():
                    await steady_load(pub, CHANNELS, rate=RATE, duration=LOAD_ROUND, tag=f"roll{n}")
                    if rollout_done.is_set():
                        return

            load = asyncio.create_task(publish_until_rollout_done())
            try:
                await eventually(lambda: pub.count >= RATE or load.done(), 10, "the load to get going")
                upgrade_started = time.monotonic()
                deletions: list[asyncio.Task[Deletion]] = []
                new: list[Member] = []
                for victim in old:
                    member = await cluster.add_node_async()  # returns once /readyz answers 200
                    new.append(member)
                    proxy.add(member)
                    routed = member.id
                    await eventually(lambda: routed in proxy.ready, 5, f"{routed} in the endpoints")
                    await asyncio.sleep(MIN_READY)
                    deletions.append(asyncio.create_task(delete_pod(cluster, proxy, victim)))
                done = await asyncio.gather(*deletions)
                rollout_done.set()
                if load.done():
                    await load  # raises what stopped it
                    raise AssertionError("the load stopped during the rollout")
                await load
            finally:
                if not load.done():
                    load.cancel()
                await asyncio.gather(load, return_exceptions=True)
            published = pub.snapshot()
            assert not pub.unacked, pub.errors[:5]
            await wait_delivered(published, clients, timeout=20)
            reports = [check_no_loss(published, c) for c in clients]
            new_ids = {m.id for m in new}
            await eventually(
                lambda: all(c.ready and c.node in new_ids for c in clients),
                10,
                "every client to be connected to a new node",
            )

    for d in done:
        took = d.ended - d.started
        assert d.exit_code == 0 and not d.notes, (d, cluster.problems()[-20:])
        assert took <= seconds(GRACE), (
            f"{d.node} took {took:.1f}s to stop (preStop {d.prestop_seconds:.1f}s), grace period {GRACE}s"
        )
        assert d.prestop.startswith("exit 0"), d
    moved = [r for r in reports if r["reconnects"] >= 1]
    assert len(moved) == CLIENTS, f"{CLIENTS - len(moved)} clients never reconnected although every node was replaced"
    rollout = max(d.ended for d in done) - upgrade_started
    assert pub.count >= RATE * rollout * 0.9, (pub.count, rollout)
    assert not cluster.task_failures(), cluster.task_failures()
    rates = reconnect_rates(proxy.accepted, done, upgrade_started)
    over = [(f"{t:.0f}s", n, round(allowed, 1)) for t, n, allowed in rates if n > allowed]
    assert not over, f"reconnect storms (bucket, reconnects, allowed): {over}; all buckets {rates}"
    print(
        f"\nrolling upgrade: {len(done)} nodes replaced in {rollout:.1f}s; per old node: connections "
        f"{[d.connections for d in done]}, preStop {[round(d.prestop_seconds, 1) for d in done]}s, "
        f"SIGTERM to exit {[round(d.exit_seconds, 1) for d in done]}s; reconnects per {BUCKET:g}s "
        f"{[n for _, n, _ in rates]} (allowed {[round(a) for _, _, a in rates]}); {pub.count} messages, "
        f"{sum(r['messages'] for r in reports)} deliveries, none lost or duplicated"
    )


def test_reconnect_rate_check_flags_a_drain_that_does_not_spread() -> None:
    """The bound is tight enough to matter: a node closing its 50 clients at once (a kill, or a
    drain that does not spread) exceeds it, while the same closes spread over 80 % of the window
    (what the node does) stay within it."""
    started = 100.0
    deletion = Deletion("node-x", 50, started, ended=started + DRAIN_WINDOW + 0.5)
    burst = [started + 0.3] * 50
    assert any(n > allowed for _, n, allowed in reconnect_rates(burst, [deletion], started))
    spread = [started + 0.8 * DRAIN_WINDOW * (i + 0.5) / 50 for i in range(50)]
    assert all(n <= allowed for _, n, allowed in reconnect_rates(spread, [deletion], started))
