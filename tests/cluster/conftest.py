"""A real multi-process Herald cluster for tests: N redis-server shards, R routers, K nodes and
optionally C control-plane replicas.

Every member is a subprocess on 127.0.0.1 (ephemeral ports). Routers run with a short lease
(`--lease-seconds 1.5`) so failover is quick. The `cluster_factory` fixture stops everything it
started at teardown, whatever happened, and prints the members' warnings/errors when a test failed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from herald.core.hashing import partition_of, shard_of_partition
from herald.router.ownership import desired_partitions
from tests.conftest import seconds
from tests.e2e.server import HeraldProcess, start_herald
from tests.redis_server import RedisServer, start_redis

JWT_SECRET = "dev-secret"
API_KEY = "dev-key"
LEASE_SECONDS = 1.5


def _get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=seconds(timeout)) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read())
        except ValueError:
            return err.code, None
    except (OSError, ValueError):
        return -1, None


class Member:
    """A router or node of the cluster: its id, role, extra args and current process."""

    def __init__(self, role: str, ident: str, args: tuple[str, ...], proc: HeraldProcess) -> None:
        self.role, self.id, self.args, self.proc = role, ident, args, proc
        self.history: list[HeraldProcess] = [proc]

    @property
    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    @property
    def ws(self) -> str:
        return self.proc.ws

    @property
    def http(self) -> str:
        return self.proc.http

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.proc.api(method, path, body, **kw)

    async def aapi(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await asyncio.to_thread(self.proc.api, method, path, body, **kw)

    def readyz(self) -> tuple[int, Any]:
        return _get_json(self.http + "/readyz")

    def __repr__(self) -> str:
        return f"<{self.role} {self.id} :{self.proc.port} {'up' if self.alive else 'down'}>"


class Cluster:
    def __init__(
        self,
        *,
        shards: int = 2,
        routers: int = 2,
        nodes: int = 2,
        partitions: int = 16,
        lease_seconds: float = LEASE_SECONDS,
        node_args: Sequence[str] = (),
        router_args: Sequence[str] = (),
        redis_args: Sequence[str] = (),
        history_size: int = 1000,
        controls: int = 0,
        control_args: Sequence[str] = (),
    ) -> None:
        self.n_shards, self.n_routers, self.n_nodes = shards, routers, nodes
        self.partitions = partitions
        self.lease_seconds = lease_seconds
        self.node_args = ("--drain-window", "1", *node_args)
        self.router_args = ("--lease-seconds", str(lease_seconds), *router_args)
        self.redis_args = tuple(redis_args)
        self.n_controls = controls
        self.control_args = tuple(control_args)
        self.history_size = history_size
        self.shards: list[RedisServer] = []
        self.routers: list[Member] = []
        self.nodes: list[Member] = []
        self.controls: list[Member] = []
        self._all: list[HeraldProcess] = []
        self._counter = {"router": 0, "node": 0, "control": 0}
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {
            "HERALD_JWT_SECRET": JWT_SECRET,
            "HERALD_API_KEY": API_KEY,
            "HERALD_REDIS": ",".join(s.url for s in self.shards),
            "HERALD_PARTITIONS": str(self.partitions),
            "HERALD_HISTORY_SIZE": str(self.history_size),
        }

    def start(self) -> Cluster:
        self.shards = [start_redis(*self.redis_args) for _ in range(self.n_shards)]
        with ThreadPoolExecutor(max_workers=max(1, self.n_routers + self.n_nodes + self.n_controls)) as pool:
            routers = [pool.submit(self.add_router) for _ in range(self.n_routers)]
            nodes = [pool.submit(self.add_node) for _ in range(self.n_nodes)]
            controls = [pool.submit(self.add_control) for _ in range(self.n_controls)]
            for f in (*routers, *nodes, *controls):
                f.result()
        self.routers.sort(key=lambda m: m.id)
        self.nodes.sort(key=lambda m: m.id)
        self.controls.sort(key=lambda m: m.id)
        if self.routers:
            self.wait_partitions_owned_sync(timeout=15)
        return self

    def _next_id(self, role: str) -> str:
        with self._lock:
            self._counter[role] += 1
            return f"{role}-{self._counter[role]}"

    def _spawn(self, role: str, ident: str, args: tuple[str, ...], port: int | None = None) -> HeraldProcess:
        extra = ("--port", str(port)) if port is not None else ()
        proc = start_herald("--node-id", ident, *args, *extra, command=role, env=self.env)
        with self._lock:
            self._all.append(proc)
        return proc

    def add_router(self, *args: str, ident: str | None = None) -> Member:
        ident = ident or self._next_id("router")
        full = (*self.router_args, *args)
        member = Member("router", ident, full, self._spawn("router", ident, full))
        self.routers.append(member)
        return member

    def add_node(self, *args: str, ident: str | None = None) -> Member:
        ident = ident or self._next_id("node")
        full = (*self.node_args, *args)
        member = Member("node", ident, full, self._spawn("node", ident, full))
        self.nodes.append(member)
        return member

    def add_control(self, *args: str, ident: str | None = None) -> Member:
        """A control-plane replica (`herald control`, admin API on `member.http`), with the
        cluster's `control_args` then `args`."""
        ident = ident or self._next_id("control")
        full = (*self.control_args, *args)
        member = Member("control", ident, full, self._spawn("control", ident, full))
        self.controls.append(member)
        return member

    async def add_control_async(self, *args: str) -> Member:
        return await asyncio.to_thread(self.add_control, *args)

    async def add_router_async(self, *args: str) -> Member:
        return await asyncio.to_thread(self.add_router, *args)

    async def add_node_async(self, *args: str) -> Member:
        return await asyncio.to_thread(self.add_node, *args)

    def kill(self, member: Member) -> None:
        """kill -9: no drain, no lease release, no cleanup."""
        member.proc.terminate(signal.SIGKILL)
        member.proc.wait(10)

    def terminate(self, member: Member, timeout: float = 20.0) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        member.proc.terminate(signal.SIGTERM)
        return member.proc.wait(timeout)

    async def terminate_async(self, member: Member, timeout: float = 20.0) -> int:
        return await asyncio.to_thread(self.terminate, member, timeout)

    def restart(self, member: Member) -> Member:
        """Kill -9 (if running) and start again with the same id on the same port."""
        if member.alive:
            self.kill(member)
        member.proc = self._spawn(member.role, member.id, member.args, port=member.proc.port)
        member.history.append(member.proc)
        return member

    async def restart_async(self, member: Member) -> Member:
        return await asyncio.to_thread(self.restart, member)

    def kill_shard(self, i: int) -> None:
        self.shards[i].kill()

    def start_shard(self, i: int) -> None:
        """(Re)start shard i on its port and directory; its data survives only with persistence."""
        self.shards[i].restart()

    def stop(self) -> None:
        for proc in self._all:
            try:
                proc.stop()
            except Exception:
                pass
        for shard in self.shards:
            shard.stop()

    # --- topology helpers ---------------------------------------------------------------------
    @property
    def live_routers(self) -> list[Member]:
        return [m for m in self.routers if m.alive]

    @property
    def live_nodes(self) -> list[Member]:
        return [m for m in self.nodes if m.alive]

    @property
    def live_controls(self) -> list[Member]:
        return [m for m in self.controls if m.alive]

    def shard_of(self, channel: str) -> int:
        return shard_of_partition(partition_of(channel, self.partitions), self.n_shards)

    def partition_of(self, channel: str) -> int:
        return partition_of(channel, self.partitions)

    def shard_of_partition(self, p: int) -> int:
        return shard_of_partition(p, self.n_shards)

    def channels_on_shard(self, shard: int, prefix: str, count: int) -> list[str]:
        out = []
        for i in range(10_000):
            name = f"{prefix}{i}"
            if self.shard_of(name) == shard:
                out.append(name)
                if len(out) == count:
                    return out
        raise AssertionError(f"fewer than {count} channels {prefix}* on shard {shard}")

    def channels_of_router(self, router: Member, prefix: str, count: int, shard: int | None = None) -> list[str]:
        """Channels whose partition `router` owns once ownership is settled among the live routers
        (optionally only on `shard`)."""
        mine = desired_partitions(router.id, [r.id for r in self.live_routers], self.partitions)
        out = []
        for i in range(10_000):
            name = f"{prefix}{i}"
            p = self.partition_of(name)
            if p in mine and (shard is None or self.shard_of_partition(p) == shard):
                out.append(name)
                if len(out) == count:
                    return out
        raise AssertionError(f"fewer than {count} channels {prefix}* owned by {router.id} on shard {shard}")

    def users_on_shard(self, shard: int, prefix: str, count: int) -> list[str]:
        return [c[len("user:") :] for c in self.channels_on_shard(shard, f"user:{prefix}", count)]

    # --- readiness and ownership ---------------------------------------------------------------
    def ownership(self, routers: Sequence[Member] | None = None) -> dict[str, list[int]] | None:
        """router id -> owned partitions (from /readyz), or None if one of them does not answer."""
        out = {}
        for r in routers if routers is not None else self.live_routers:
            _status, body = r.readyz()
            if not isinstance(body, dict) or "partitions" not in body:
                return None
            out[r.id] = body["partitions"]
        return out

    def fully_owned(self, routers: Sequence[Member] | None = None) -> bool:
        """Ownership settled: each of `routers` (default: the live ones) owns exactly the partitions
        rendezvous hashing gives it among them — so every partition has exactly one owner."""
        routers = list(routers if routers is not None else self.live_routers)
        own = self.ownership(routers)
        if own is None:
            return False
        ids = [r.id for r in routers]
        return all(sorted(own[i]) == sorted(desired_partitions(i, ids, self.partitions)) for i in ids)

    def wait_partitions_owned_sync(self, timeout: float = 10.0, routers: Sequence[Member] | None = None) -> float:
        """Wait until ownership is settled among `routers` (see `fully_owned`); returns the seconds."""
        started = time.monotonic()
        deadline = started + seconds(timeout)
        while not self.fully_owned(routers):
            if time.monotonic() > deadline:
                raise AssertionError(f"partition ownership not settled after {timeout}s: {self.ownership(routers)}")
            time.sleep(0.05)
        return time.monotonic() - started

    async def wait_partitions_owned(self, timeout: float = 10.0, routers: Sequence[Member] | None = None) -> float:
        return await asyncio.to_thread(self.wait_partitions_owned_sync, timeout, routers)

    async def wait_ready(self, members: Sequence[Member], timeout: float = 15.0, ready: bool = True) -> float:
        """Poll /readyz of `members` until every one answers 200 (ready) or 503 (not ready)."""
        want = 200 if ready else 503
        started = time.monotonic()

        def check() -> bool:
            return all(m.readyz()[0] == want for m in members)

        deadline = started + seconds(timeout)
        while not await asyncio.to_thread(check):
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz never answered {want} on {members}: {[m.readyz() for m in members]}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    # --- diagnostics ----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Log lines at warning/error level and tracebacks, from every process ever started."""
        out = []
        for proc in self._all:
            for line in proc.log_lines:
                if '"level":"error"' in line or '"level":"warning"' in line or "Traceback" in line:
                    out.append(f":{proc.port} {line.rstrip()}")
        return out

    def task_failures(self) -> list[str]:
        return [line for line in self.problems() if "task.failed" in line]

    def dump(self) -> None:
        lines = self.problems()
        print(
            f"--- cluster members: routers {self.routers}, nodes {self.nodes}, controls {self.controls}, shards "
            f"{[s.url for s in self.shards]}"
        )
        print(f"--- {len(lines)} warning/error log lines (last 60):")
        for line in lines[-60:]:
            print(line[:2000])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Cluster]]:
    """`make(**Cluster kwargs) -> started Cluster`; everything is stopped at teardown."""
    made: list[Cluster] = []

    def make(**kw: Any) -> Cluster:
        cluster = Cluster(**kw)
        made.append(cluster)
        return cluster.start()

    yield make
    rep = getattr(request.node, "rep_call", None)
    for cluster in made:
        if rep is None or rep.failed:
            cluster.dump()
        cluster.stop()


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """2 Redis shards, 2 routers, 2 nodes, 16 partitions."""
    return cluster_factory()
