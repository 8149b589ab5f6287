"""Control-plane benchmark: drain, scale-out rebalancing, and idle overhead, on loopback.

    python loadtest/bench/control_plane.py [--connections 5000] [--drain-window 30] [--idle 10000]

Starts redis-server (ephemeral port), one router, one control replica and Herald nodes (servers
pinned to CPU 0 when `taskset` exists, this client on CPU 1), and measures:

1. drain: N WebSocket clients on node A, `POST /admin/nodes/A/drain` with the default window →
   time until A is empty, and the reconnect rate the surviving node sees (per second, max and
   mean) against the bound (N / window) × 2;
2. scale-out: N clients spread over 2 nodes, a 3rd node added → time until the spread reported by
   GET /admin/cluster is within the configured bound (clients reconnect to a random ready node,
   like a Service);
3. idle overhead: `--idle` idle connections over 2 nodes → Redis commands/s and control CPU.

Everything is bounded in time; only 127.0.0.1 is used. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import aiohttp
import jwt

SECRET, KEY = "bench-secret-bench-secret-bench-secret", "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Procs:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="herald-cp-bench-")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_port = free_port()
        self.pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.dir, f"{name}.log"), "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([*self.pin, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HERALD_JWT_SECRET": SECRET,
            "HERALD_API_KEY": KEY,
            "HERALD_LOG_LEVEL": "warning",
            "HERALD_REDIS": f"redis://127.0.0.1:{self.redis_port}/0",
            "HERALD_MAX_CONNECTIONS": "30000",
        }

    def herald(self, role: str, port: int, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            f"{role}-{port}", ["herald", role, "--host", "127.0.0.1", "--port", str(port), *args], self.env()
        )

    def retire(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM (an empty node drains at once and leaves the cluster) and wait."""
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


async def wait_http(session: aiohttp.ClientSession, url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


class Fleet:
    """Clients that hold a WebSocket each and, when closed, reconnect to a random ready node."""

    def __init__(self, session: aiohttp.ClientSession, nodes: dict[str, int]) -> None:
        self.session = session
        self.nodes = nodes  # node id -> port
        self.ready: list[str] = list(nodes)
        self.reconnects: list[tuple[float, str]] = []
        self.where: dict[int, str] = {}
        self.sockets: dict[int, aiohttp.ClientWebSocketResponse] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stop = asyncio.Event()

    async def track_readiness(self) -> None:
        while not self.stop.is_set():
            ready = []
            for node, port in list(self.nodes.items()):
                try:
                    async with self.session.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            ready.append(node)
                except aiohttp.ClientError:
                    pass
            self.ready = ready or self.ready
            await asyncio.sleep(0.25)

    async def client(self, i: int, first: str, connected: asyncio.Event) -> None:
        token = jwt.encode({"sub": f"u{i}", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
        node, initial = first, True
        deadline = time.monotonic() + 900
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                async with self.session.ws_connect(
                    f"ws://127.0.0.1:{self.nodes[node]}/ws?token={token}", protocols=["herald.json"], heartbeat=None
                ) as ws:
                    self.where[i] = node
                    self.sockets[i] = ws
                    if initial:
                        connected.set()
                        initial = False
                    else:
                        self.reconnects.append((time.monotonic(), node))
                    async for _ in ws:
                        pass
            except (TimeoutError, aiohttp.ClientError):
                pass
            self.where.pop(i, None)
            self.sockets.pop(i, None)
            await asyncio.sleep(random.uniform(0.05, 0.5))  # the client's own backoff jitter
            node = random.choice(self.ready)

    async def open(self, placement: list[str], rate: int = 1500) -> None:
        """Connect len(placement) clients, client i to placement[i], at about `rate` per second."""
        events = []
        base = len(self.tasks)
        for k, node in enumerate(placement):
            ev = asyncio.Event()
            events.append(ev)
            self.tasks.append(asyncio.create_task(self.client(base + k, node, ev)))
            if k % 100 == 99:
                await asyncio.sleep(100 / rate)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 300)

    def counts(self) -> Counter[str]:
        return Counter(self.where.values())

    async def close(self) -> None:
        """Close every socket cleanly (the servers see them go), then end the clients."""
        self.stop.set()
        await asyncio.wait_for(
            asyncio.gather(*(ws.close() for ws in list(self.sockets.values())), return_exceptions=True), 30
        )
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def cluster_doc(session: aiohttp.ClientSession, control_port: int) -> dict[str, Any]:
    async with session.get(
        f"http://127.0.0.1:{control_port}/admin/cluster", headers={"Authorization": f"apikey {KEY}"}
    ) as r:
        return await r.json()  # type: ignore[no-any-return]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_commands(port: int) -> int:
    out = subprocess.run(["redis-cli", "-p", str(port), "info", "stats"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return 0


async def bench_drain(
    procs: Procs, session: aiohttp.ClientSession, n: int, window: float, control: int
) -> dict[str, Any]:
    ports = {"drain-a": free_port(), "drain-b": free_port()}
    nodes = [
        procs.herald("node", port, "--node-id", node, "--drain-window", str(window)) for node, port in ports.items()
    ]
    for port in ports.values():
        await wait_http(session, f"http://127.0.0.1:{port}/readyz")
    fleet = Fleet(session, ports)
    tracker = asyncio.create_task(fleet.track_readiness())
    try:
        await fleet.open(["drain-a"] * n)
        started = time.monotonic()
        async with session.post(
            f"http://127.0.0.1:{control}/admin/nodes/drain-a/drain", headers={"Authorization": f"apikey {KEY}"}
        ) as r:
            assert r.status == 202, await r.text()
        while fleet.counts().get("drain-b", 0) < n and time.monotonic() - started < window * 2 + 30:
            await asyncio.sleep(0.05)
        empty_at = None
        while time.monotonic() - started < window * 2 + 30:
            doc = await cluster_doc(session, control)
            a = next(m for m in doc["members"] if m["id"] == "drain-a")
            if a["state"] == "drained":
                empty_at = time.monotonic() - started
                break
            await asyncio.sleep(0.2)
        per_second = Counter(int(t - started) for t, node in fleet.reconnects if node == "drain-b")
        moved = fleet.counts().get("drain-b", 0)
        return {
            "connections": n,
            "window_s": window,
            "all_moved_after_s": round(max((t for t, _ in fleet.reconnects), default=started) - started, 2),
            "drained_reported_after_s": None if empty_at is None else round(empty_at, 2),
            "moved": moved,
            "reconnects_per_s_max": max(per_second.values(), default=0),
            "reconnects_per_s_mean": round(moved / max(1, len(per_second)), 1),
            "bound_per_s": round(n / window * 2, 1),
        }
    finally:
        tracker.cancel()
        await fleet.close()
        procs.retire(nodes)


async def bench_scale_out(
    procs: Procs, session: aiohttp.ClientSession, n: int, control: int, ratio: float
) -> dict[str, Any]:
    ports = {"scale-a": free_port(), "scale-b": free_port()}
    nodes = [procs.herald("node", port, "--node-id", node) for node, port in ports.items()]
    for port in ports.values():
        await wait_http(session, f"http://127.0.0.1:{port}/readyz")
    fleet = Fleet(session, dict(ports))
    tracker = asyncio.create_task(fleet.track_readiness())
    try:
        await fleet.open(["scale-a", "scale-b"] * (n // 2))
        c_port = free_port()
        added = time.monotonic()
        nodes.append(procs.herald("node", c_port, "--node-id", "scale-c"))
        await wait_http(session, f"http://127.0.0.1:{c_port}/readyz")
        fleet.nodes["scale-c"] = c_port
        within = None
        spreads = []
        while time.monotonic() - added < 300:
            doc = await cluster_doc(session, control)
            bal = doc["balance"]
            spreads.append((round(time.monotonic() - added, 1), bal["nodes"], bal["spread"]))
            if bal["nodes"] == 3 and bal["spread"] <= ratio:
                within = time.monotonic() - added
                break
            await asyncio.sleep(0.5)
        return {
            "connections": n,
            "bound": ratio,
            "within_bound_after_s": None if within is None else round(within, 1),
            "final": dict(fleet.counts()),
            "moved": len(fleet.reconnects),
            "spread_samples": spreads[::10],
        }
    finally:
        tracker.cancel()
        await fleet.close()
        procs.retire(nodes)


async def bench_idle(
    procs: Procs, session: aiohttp.ClientSession, n: int, control_proc: subprocess.Popen[bytes], seconds: float = 40.0
) -> dict[str, Any]:
    """Over `seconds` (two of the nodes' 20 s refresh cycles of presence and connection counts)."""
    ports = {"idle-a": free_port(), "idle-b": free_port()}
    nodes = [procs.herald("node", port, "--node-id", node) for node, port in ports.items()]
    for port in ports.values():
        await wait_http(session, f"http://127.0.0.1:{port}/readyz")
    fleet = Fleet(session, ports)
    try:
        await fleet.open(["idle-a", "idle-b"] * (n // 2))
        await asyncio.sleep(3)  # let connect-time work settle
        pids = [control_proc.pid, *(n.pid for n in nodes)]
        c0, t0, cpu0 = redis_commands(procs.redis_port), time.monotonic(), [cpu_seconds(p) for p in pids]
        await asyncio.sleep(seconds)
        c1, t1, cpu1 = redis_commands(procs.redis_port), time.monotonic(), [cpu_seconds(p) for p in pids]
        cpu = [round(100 * (b - a) / (t1 - t0), 2) for a, b in zip(cpu0, cpu1, strict=True)]
        return {
            "connections": len(fleet.where),
            "seconds": seconds,
            "redis_commands_per_s": round((c1 - c0) / (t1 - t0), 1),
            "control_cpu_percent": cpu[0],
            "node_cpu_percent": cpu[1:],
        }
    finally:
        await fleet.close()
        procs.retire(nodes)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--drain-window", type=float, default=30.0)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--only", choices=["drain", "scale-out", "idle"], action="append")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    procs = Procs()
    results: dict[str, Any] = {}
    try:
        procs.spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(procs.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                procs.dir,
            ],
        )
        await asyncio.sleep(0.3)
        procs.herald("router", free_port())
        control_port = free_port()
        control = procs.herald("control", control_port)
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await wait_http(session, f"http://127.0.0.1:{control_port}/readyz")
            todo = args.only or ["drain", "scale-out", "idle"]
            if "drain" in todo:
                results["drain"] = await bench_drain(procs, session, args.connections, args.drain_window, control_port)
                print(json.dumps({"drain": results["drain"]}), file=sys.stderr)
            if "scale-out" in todo:
                results["scale_out"] = await bench_scale_out(procs, session, args.connections, control_port, 0.2)
                print(json.dumps({"scale_out": results["scale_out"]}), file=sys.stderr)
            if "idle" in todo:
                results["idle"] = await bench_idle(procs, session, args.idle, control)
    finally:
        procs.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
