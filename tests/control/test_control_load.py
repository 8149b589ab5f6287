"""Connections moved by the control plane, with clients and a publish load running: a rolling
drain of every node, rebalancing after scale-out (automatic and requested), and the node's own
drain endpoint and `herald drain` (the Kubernetes preStop hook).

Clients are the resuming clients of tests/cluster/checker.py; they reconnect where a
readiness-aware balancer sends them (round-robin over nodes whose /readyz is 200) and the
no-loss checker proves that every acknowledged publish reached every subscriber once, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.cluster.checker import Publisher, eventually, running
from tests.cluster.conftest import Cluster, Member
from tests.conftest import seconds

from .support import (
    Collector,
    NodePicker,
    PickingClient,
    admin,
    check_load,
    cluster_doc,
    max_rate,
    members_by_id,
    metric,
    publish_until,
    wait_doc,
)

RATIO = 0.2
INTERVAL = 1.5
REBALANCE_ARGS = ("--rebalance-interval", str(INTERVAL), "--rebalance-ratio", str(RATIO), "--rebalance-min-mean", "5")


def _state(node_id: str, *states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: members_by_id(doc, "node").get(node_id, {}).get("state") in states


def _balanced(nodes: int, connections: int) -> Callable[[dict[str, Any]], bool]:
    """`nodes` ready nodes holding `connections` in all, each some, the spread within the bound."""

    def cond(doc: dict[str, Any]) -> bool:
        ready = [m for m in doc["members"] if m["role"] == "node" and m["state"] == "ready"]
        return (
            len(ready) == nodes
            and sum(m["connections"] for m in ready) == connections
            and all(m["connections"] > 0 for m in ready)
            and doc["balance"]["spread"] <= RATIO + 1e-9
        )

    return cond


def _placement(doc: dict[str, Any]) -> dict[str, int]:
    return {i: m["connections"] for i, m in members_by_id(doc, "node").items() if m["state"] == "ready"}


def _rebalance_log(cluster: Cluster) -> str:
    """The rebalancing rounds and sheds, in time order, from the controls' and nodes' logs."""
    lines = []
    for m in (*cluster.controls, *cluster.nodes):
        for line in m.proc.log_lines:
            if '"control.rebalance' in line or '"node.shed"' in line:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                lines.append(
                    (
                        entry.get("timestamp", ""),
                        m.id,
                        {k: v for k, v in entry.items() if k not in ("timestamp", "level")},
                    )
                )
    return "\n".join(f"{t} {who} {e}" for t, who, e in sorted(lines))


async def _readyz(member: Member) -> int:
    return (await admin(member, "GET", "/readyz", key=None))[0]


# --- rolling drain ----------------------------------------------------------------------------------

ROLL_CHANNELS = [f"room:roll{i}" for i in range(6)]


async def test_rolling_drain_of_every_node_under_load_loses_nothing(cluster_factory: Callable[..., Cluster]) -> None:
    """3 nodes, 60 resuming clients, 60 msg/s: each node in turn is drained through
    POST /admin/nodes/<id>/drain (window 1.5 s), stopped with SIGTERM and restarted. Every client
    of a drained node gets a `drain` advisory and 1012 and resumes elsewhere; reconnects never
    come faster than 2 × (the node's connections / window) per second; afterwards every client is
    connected and got every acknowledged message once, in order. (Automatic rebalancing is off:
    a restarted node comes back empty and would otherwise be filled by shedding, which is the
    scale-out tests' subject; here every reconnect is the drain's.)"""
    cluster = cluster_factory(shards=1, routers=2, nodes=3, controls=1, control_args=("--auto-rebalance", "false"))
    control = cluster.controls[0]
    window = 1.5
    drains: list[tuple[str, int, float, float]] = []  # node, its connections, drain ordered, drained
    async with NodePicker(cluster) as picker:
        clients = [
            PickingClient(picker, f"roll{i}", [ROLL_CHANNELS[i % 6], ROLL_CHANNELS[(i + 1) % 6]]) for i in range(60)
        ]
        async with running(clients), Publisher([r.http for r in cluster.routers]) as pub:
            assert sorted(sum(c.node == n.id for c in clients) for n in cluster.nodes) == [20, 20, 20]
            stop = asyncio.Event()
            load = asyncio.create_task(publish_until(pub, ROLL_CHANNELS, 60.0, stop))
            try:
                await eventually(lambda: pub.count >= 30, 10, "the load to get going")
                for node in list(cluster.nodes):
                    on_node = [c for c in clients if c.node == node.id]
                    assert on_node, f"no client on {node.id}"
                    ordered = time.monotonic()
                    status, body = await admin(control, "POST", f"/admin/nodes/{node.id}/drain", {"window": window})
                    assert (status, body) == (202, {"node": node.id, "state": "draining", "window": window})
                    await eventually(
                        lambda: all(c.node != node.id and c.ready for c in on_node),
                        window + 5,
                        f"{node.id}'s clients to resume elsewhere",
                    )
                    await wait_doc(control, _state(node.id, "drained"), 5, f"{node.id} shown drained")
                    drains.append((node.id, len(on_node), ordered, time.monotonic()))
                    assert await _readyz(node) == 503
                    assert await metric(node, "herald_drains_total") == 1
                    assert await cluster.terminate_async(node, timeout=10) == 0
                    await cluster.restart_async(node)
                    await wait_doc(control, _state(node.id, "ready"), 5, f"{node.id} back")
                    assert not load.done(), "the load stopped early"
            finally:
                stop.set()
                await asyncio.gather(load, return_exceptions=True)
            reports = await check_load(load, pub, clients)
            assert all(c.ready for c in clients), [c.summary() for c in clients if not c.ready]
    assert sum(r["messages"] for r in reports) > 0
    assert await metric(control, "herald_control_drain_requests_total") == 3
    for c in clients:
        assert c.reconnects >= 1, c.summary()  # every node was drained, so everyone moved
        for s in c.sessions[:-1]:
            assert s.close_code == 1012, c.summary()
            assert [a["reason"] for a in s.advisories] == ["drain"], (c.summary(), s.advisories)
    reconnects = [t for c in clients for t in c.opened_at[1:]]
    for node_id, conns, ordered, drained in drains:
        during = [t for t in reconnects if ordered <= t <= drained + 1.0]
        assert len(during) >= conns, (node_id, conns, len(during))
        limit = 2 * conns / window + 3
        print(
            f"{node_id}: {conns} connections drained in {drained - ordered:.1f}s, "
            f"at most {max_rate(during)} reconnects/s (limit {limit:.0f})"
        )
        assert max_rate(during) <= limit, (
            f"{node_id}: {max_rate(during)} reconnects within one second, over {limit:.0f} "
            f"({conns} connections drained over {window}s)"
        )


# --- rebalancing after scale-out --------------------------------------------------------------------

SCALE_CHANNELS = [f"room:scale{i}" for i in range(4)]


async def _until_rounds_stop(control: Member, timeout: float) -> dict[str, Any]:
    """Wait until no rebalancing round ran for two intervals while the view stayed balanced;
    return that view."""
    deadline = time.monotonic() + seconds(timeout)
    while True:
        rounds = await metric(control, "herald_control_rebalance_rounds_total")
        first = await cluster_doc(control)
        doc = await wait_doc(
            control, lambda d: d["now"] >= first["now"] + 2 * INTERVAL, 3 * INTERVAL + 2, "two rebalancing intervals"
        )
        if (
            await metric(control, "herald_control_rebalance_rounds_total") == rounds
            and doc["balance"]["spread"] <= RATIO + 1e-9
        ):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"rebalancing rounds never stopped: {_placement(doc)}")


async def test_scale_out_rebalances_connections_onto_the_new_node_without_loss(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """80 clients on 2 nodes under a 40 msg/s load; a 3rd node joins (it gets no existing
    connection by itself). Control (--rebalance-interval 1.5, ratio 0.2, min mean 5) asks the busy
    nodes to shed with `rebalance` advisories until the spread in /admin/cluster is ≤ 0.2; no
    message is lost or duplicated, and POST /admin/rebalance then answers 200 balanced."""
    cluster = cluster_factory(shards=1, routers=1, nodes=2, controls=1, control_args=REBALANCE_ARGS)
    control = cluster.controls[0]
    n = 80
    async with NodePicker(cluster) as picker:
        clients = [PickingClient(picker, f"scale{i}", [SCALE_CHANNELS[i % 4]]) for i in range(n)]
        async with running(clients), Publisher([cluster.routers[0].http]) as pub:
            doc = await wait_doc(control, lambda d: d["totals"]["connections"] == n, 10, "all clients in the view")
            assert sorted(_placement(doc).values()) == [40, 40], _placement(doc)
            stop = asyncio.Event()
            load = asyncio.create_task(publish_until(pub, SCALE_CHANNELS, 40.0, stop))
            try:
                await eventually(lambda: pub.count >= 20, 10, "the load to get going")
                added_at = time.monotonic()
                await cluster.add_node_async()
                try:
                    doc = await wait_doc(control, _balanced(3, n), 25, "the spread within 0.2 on 3 nodes")
                    took = time.monotonic() - added_at
                    doc = await _until_rounds_stop(control, 15)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\nrebalancing log:\n" + _rebalance_log(cluster)) from None
                assert _balanced(3, n)(doc), _placement(doc)
                assert not load.done(), "the load stopped early"
            finally:
                stop.set()
                await asyncio.gather(load, return_exceptions=True)
            await check_load(load, pub, clients)

            status, body = await admin(control, "POST", "/admin/rebalance")
            assert status == 200 and body["status"] == "balanced", (status, body)
            assert set(body["nodes"]) == {m.id for m in cluster.nodes} and body["bound"] == RATIO, body
            assert body["spread"] <= RATIO + 1e-9 and "plan" not in body, body
    shed = [await metric(m, "herald_shed_connections_total") for m in cluster.nodes[:2]]
    requested = await metric(control, "herald_control_rebalance_requests_total")
    assert sum(shed) > 0 and sum(shed) <= requested, (shed, requested)
    assert await metric(control, "herald_control_rebalance_rounds_total") >= 1
    assert await metric(control, "herald_control_connection_spread") <= RATIO + 1e-9
    moved = [c for c in clients if c.reconnects]
    assert moved and all(
        s.close_code == 1012 and [a["reason"] for a in s.advisories] == ["rebalance"]
        for c in moved
        for s in c.sessions[:-1]
    ), [c.summary() for c in moved]
    print(f"balanced {took:.1f}s after the scale-out: {_placement(doc)}; shed {shed}, {len(moved)} clients moved")


async def test_rebalance_on_request_converges_when_automatic_rebalancing_is_off(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """--auto-rebalance false, two control replicas: after scale-out nothing moves on its own; POST
    /admin/rebalance answers 202 with the first round's plan and keeps going one round per
    interval until the spread is within bounds; meanwhile the other replica answers 409 (the
    round lease is taken); once balanced, the request answers 200 balanced."""
    cluster = cluster_factory(
        shards=1, routers=1, nodes=2, controls=2, control_args=("--auto-rebalance", "false", *REBALANCE_ARGS)
    )
    first, second = cluster.controls
    n = 60
    async with NodePicker(cluster) as picker:
        clients = [PickingClient(picker, f"req{i}", []) for i in range(n)]
        async with running(clients):
            await wait_doc(first, lambda d: d["totals"]["connections"] == n, 10, "all clients in the view")
            third = await cluster.add_node_async()
            seen = await wait_doc(first, lambda d: _state(third.id, "ready")(d), 5, "the new node")
            await wait_doc(second, lambda d: _state(third.id, "ready")(d), 5, "the new node (second replica)")
            doc = await wait_doc(
                first, lambda d: d["now"] >= seen["now"] + 2 * INTERVAL, 3 * INTERVAL + 2, "two rebalancing intervals"
            )
            assert _placement(doc) == {cluster.nodes[0].id: 30, cluster.nodes[1].id: 30, third.id: 0}
            assert doc["balance"]["spread"] == 0.5
            for c in (first, second):
                assert await metric(c, "herald_control_rebalance_rounds_total") == 0
            assert all(c.reconnects == 0 for c in clients)

            status, body = await admin(first, "POST", "/admin/rebalance")
            assert status == 202 and body["status"] == "started", (status, body)
            assert body["plan"] == {cluster.nodes[0].id: 10, cluster.nodes[1].id: 10}, body
            assert body["spread"] == 0.5 and body["bound"] == RATIO, body
            status, busy = await admin(second, "POST", "/admin/rebalance")
            assert status == 409 and busy["error"]["code"] == "conflict" and busy["error"]["message"], busy

            await eventually(
                lambda: '"control.rebalance.done"' in first.proc.output(), 25, "the requested rebalancing to finish"
            )
            try:
                doc = await wait_doc(first, _balanced(3, n), 5, "the spread within 0.2 on 3 nodes")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nrebalancing log:\n" + _rebalance_log(cluster)) from None
            status, body = await admin(first, "POST", "/admin/rebalance")
            assert status == 200 and body["status"] == "balanced", (status, body)
            assert all(c.ready for c in clients)
    assert await metric(first, "herald_control_rebalance_rounds_total") >= 1
    assert await metric(second, "herald_control_rebalance_rounds_total") == 0
    shed = [await metric(m, "herald_shed_connections_total") for m in cluster.nodes[:2]]
    assert sum(shed) >= 20, shed
    print(f"balanced on request: {_placement(doc)}; shed {shed}")


# --- the node's own drain: POST /admin/drain?wait=1 and `herald drain` -----------------------------


async def _herald_drain(url: str, key: str | None) -> tuple[int, str, str, float]:
    """Run `herald drain --url URL` with HERALD_API_KEY=key; (exit code, stdout, stderr, when it ended)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    if key is not None:
        env["HERALD_API_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald",
        "drain",
        "--url",
        url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(seconds(20)):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic()


async def test_node_drain_wait_and_herald_drain_cli_return_once_the_node_is_empty(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """`herald drain --url` (the preStop hook) and POST /admin/drain?wait=1&window=S answer only
    when every client is gone (each got a `drain` advisory and 1012): exit code 0 with
    {"state":"drained","closed":n,"left":0}; readiness is 503 afterwards. A wrong key gets 401
    (exit code 1) and no key exit code 2, and drain nothing; bad windows get 400."""
    cluster = cluster_factory(shards=1, routers=0, nodes=2, node_args=("--drain-window", "1.5"))
    cli_node, http_node = cluster.nodes
    on_cli = [await Collector.open(cli_node.ws, f"cli{i}") for i in range(5)]
    on_http = [await Collector.open(http_node.ws, f"http{i}") for i in range(4)]
    try:
        code, out, err, _ = await _herald_drain(cli_node.http, "wrong-key")
        assert code == 1 and "401" in err, (code, out, err)
        code, out, err, _ = await _herald_drain(cli_node.http, None)
        assert code == 2 and "API key" in err, (code, out, err)
        assert await _readyz(cli_node) == 200 and all(c.close_code is None for c in on_cli)

        code, out, err, ended = await _herald_drain(cli_node.http, "dev-key")
        assert code == 0, (code, out, err)
        assert json.loads(out) == {"node": cli_node.id, "state": "drained", "closed": 5, "left": 0}, out
        closed = [c.closed_at for c in on_cli if c.closed_at is not None]
        assert len(closed) == 5 and max(closed) <= ended, "answered before the node was empty"
        assert max(closed) - min(closed) <= 1.5, "closes not within the node's drain window"
        assert [c.close_code for c in on_cli] == [1012] * 5
        for c in on_cli:
            assert [f.get("reason") for f in c.matching(lambda f: f["type"] == "reconnect")] == ["drain"], c.frames
        assert await _readyz(cli_node) == 503
        assert await metric(cli_node, "herald_drains_total") == 1

        for path, key in (
            ("/admin/drain?wait=1&window=abc", "dev-key"),
            ("/admin/drain?wait=1&window=-1", "dev-key"),
            ("/admin/drain?wait=1&window=3601", "dev-key"),
        ):
            status, body = await admin(http_node, "POST", path, key=key)
            assert status == 400 and body["error"]["code"] == "bad_request", (path, status, body)
        for key in (None, "wrong-key"):
            status, body = await admin(http_node, "POST", "/admin/drain?wait=1", key=key)
            assert status == 401 and body["error"]["code"] == "unauthorized", (status, body)
        assert await _readyz(http_node) == 200 and all(c.close_code is None for c in on_http)

        started = time.monotonic()
        status, body = await admin(http_node, "POST", "/admin/drain?wait=1&window=1")
        answered = time.monotonic()
        assert (status, body) == (200, {"node": http_node.id, "state": "drained", "closed": 4, "left": 0})
        assert all(c.closed_at is not None and c.closed_at <= answered for c in on_http), "answered before empty"
        assert answered - started < seconds(1 + 1.0), "the window given in the request was not used"
        assert [c.close_code for c in on_http] == [1012] * 4
        assert await _readyz(http_node) == 503
        # asking again (a SIGTERM or a second preStop after a drain) gets the same finished drain
        status, again = await admin(http_node, "POST", "/admin/drain?wait=1")
        assert (status, again) == (200, body)
    finally:
        for c in (*on_cli, *on_http):
            await c.close()
