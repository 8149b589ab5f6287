"""The control plane in a real multi-process cluster (redis-server shards, routers, nodes and
`herald control` replicas as subprocesses): membership and leader election, crash cleanup after a
kill -9 or a long pause, the admin API's errors, and the cluster-wide per-user limit.

Every wait polls GET /admin/cluster, /metrics or Redis with a deadline; nothing sleeps for a
fixed time where an event can be awaited.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from herald.core.engine.redis import keys
from tests.cluster.checker import Pub, ResumingClient, check_no_loss, running, wait_delivered
from tests.cluster.conftest import Cluster
from tests.conftest import make_token, seconds

from .support import (
    Collector,
    admin,
    eventually_true,
    has_key,
    members_by_id,
    metric,
    metrics,
    registrations_of,
    wait_doc,
    wait_indexed,
)

MEMBER_TIMEOUT = 2.0
CONTROL_LEASE = 2.0
#: Slack on top of a protocol bound: one control tick (1 s), one heartbeat period (1 s), polling.
SLACK = 2.5


@pytest.fixture
def namespaces(tmp_path: Path) -> str:
    """A config file giving the `room` namespace join/leave events (for every component: the
    control plane emits the leave events of a dead node's clients)."""
    path = tmp_path / "herald.json"
    path.write_text(json.dumps({"namespaces": {"room": {"join_leave": True}}}))
    return str(path)


def _error_shape(status: int, body: Any, want_status: int, want_code: str | None = None) -> None:
    __tracebackhide__ = True
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and set(body) >= {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str), body
    assert err["message"], body
    if want_code is not None:
        assert err["code"] == want_code, body


def _node_state(node_id: str, *states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: members_by_id(doc, "node").get(node_id, {}).get("state") in states


def _dead_and_cleaned(node_id: str) -> Callable[[dict[str, Any]], bool]:
    def cond(doc: dict[str, Any]) -> bool:
        m = members_by_id(doc, "node").get(node_id)
        return m is not None and m["state"] == "dead" and "cleaned" in m

    return cond


async def _connect_outcome(url: str, user: str) -> int | str:
    """'connected', or the close code of a connection refused after the upgrade."""
    conn = await websockets.connect(
        f"{url}?token={make_token(user)}",
        subprotocols=["herald.json"],
        open_timeout=seconds(5),
        ping_interval=None,
        close_timeout=seconds(2),
    )
    try:
        async with asyncio.timeout(seconds(5)):
            frame = json.loads(await conn.recv())
        assert frame["type"] == "connected", frame
        return "connected"
    except websockets.ConnectionClosed:
        assert conn.close_code is not None
        return conn.close_code
    finally:
        await conn.close()


# --- membership and leadership ----------------------------------------------------------------------


async def test_cluster_view_lists_every_member_with_one_leader_and_a_standby_takes_over(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """2 nodes, 2 routers, 2 control replicas: GET /admin/cluster lists all six, ready, with their
    role-specific fields; exactly one control is leader and both replicas agree on it; the routers'
    partitions cover every partition once. After kill -9 of the leader the standby holds the lease
    within lease_seconds + a tick, and the dead replica is shown dead."""
    cluster = cluster_factory(
        shards=1,
        routers=2,
        nodes=2,
        controls=2,
        control_args=("--lease-seconds", str(CONTROL_LEASE), "--member-timeout", str(MEMBER_TIMEOUT)),
    )
    first, second = cluster.controls

    def complete(doc: dict[str, Any]) -> bool:
        ready = {(m["role"], m["id"]) for m in doc["members"] if m["state"] == "ready"}
        want = {(m.role, m.id) for m in (*cluster.nodes, *cluster.routers, *cluster.controls)}
        owned = [p for m in doc["members"] if m["role"] == "router" for p in m["partitions"]]
        return ready >= want and doc["leader"] is not None and sorted(owned) == list(range(cluster.partitions))

    doc = await wait_doc(first, complete, 10, "every member ready, a leader, all partitions owned")
    assert len(doc["members"]) == 6, doc["members"]
    for m in doc["members"]:
        assert {"member", "role", "id", "state", "last_seen", "age", "rates"} <= set(m), m
        assert m["member"] == f"{m['role']}:{m['id']}" and 0 <= m["age"] <= MEMBER_TIMEOUT, m
    nodes, routers, controls = (members_by_id(doc, r) for r in ("node", "router", "control"))
    for n in nodes.values():
        assert n["connections"] == 0 and n["transports"] == {"ws": 0, "sse": 0}, n
        assert {"inbox", "latency"} <= set(n) and set(n["latency"]) == {"p50", "p99"}, n
    owned = [p for r in routers.values() for p in r["partitions"]]
    assert len(owned) == len(set(owned)) == cluster.partitions, routers  # no overlap, no gap
    assert all(isinstance(r["lag"], int) for r in routers.values()), routers
    leaders = [c for c in controls.values() if c["leader"]]
    assert len(leaders) == 1 and doc["leader"] == leaders[0]["id"], controls
    assert set(doc["totals"]) == {"connections", "messages_in", "messages_out", "published"}
    assert doc["balance"] == {"nodes": 2, "mean": 0.0, "spread": 0.0}

    leader = next(c for c in cluster.controls if c.id == doc["leader"])
    standby = second if leader is first else first
    await wait_doc(standby, lambda d: d["leader"] == leader.id, 5, "the standby to see the same leader")
    assert await metric(leader, "herald_control_leader") == 1
    assert await metric(standby, "herald_control_leader") == 0
    assert await metric(leader, "herald_control_members", role="node", state="ready") == 2
    assert await metric(leader, "herald_control_members", role="router", state="ready") == 2
    for node in cluster.nodes:
        assert ("herald_inbox_length", frozenset()) in await metrics(node)

    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill, leader)
    doc = await wait_doc(
        standby, lambda d: d["leader"] == standby.id, CONTROL_LEASE + SLACK, "the standby to take the leader lease"
    )
    takeover = time.monotonic() - killed_at
    assert members_by_id(doc, "control")[standby.id]["leader"] is True
    assert await metric(standby, "herald_control_leader") == 1
    assert takeover <= seconds(CONTROL_LEASE + SLACK), takeover
    doc = await wait_doc(
        standby,
        lambda d: members_by_id(d, "control")[leader.id]["state"] == "dead",
        MEMBER_TIMEOUT + SLACK,
        "the killed replica to be shown dead",
    )
    assert members_by_id(doc, "control")[leader.id]["leader"] is False
    assert _node_state(cluster.nodes[0].id, "ready")(doc) and _node_state(cluster.nodes[1].id, "ready")(doc)


# --- crash cleanup ------------------------------------------------------------------------------------


async def test_kill_9_of_a_node_is_cleaned_up_with_leave_events(
    cluster_factory: Callable[..., Cluster], namespaces: str
) -> None:
    """Clients with presence in a join/leave room on node A; kill -9 A. Within member_timeout + a
    tick the leader marks A dead with its cleanup counts; Redis then holds no subscription field,
    presence entry, user connection, inbox or cleanup index of A (only the tombstone); a client on
    node B in the same room got a `leave` for each of A's clients; the cleanup metrics moved."""
    cluster = cluster_factory(
        shards=2,
        routers=1,
        nodes=2,
        controls=1,
        node_args=("--config", namespaces),
        router_args=("--config", namespaces),
        control_args=("--config", namespaces, "--member-timeout", str(MEMBER_TIMEOUT)),
    )
    control = cluster.controls[0]
    node_a, node_b = cluster.nodes
    room = "room:crash"
    watcher = await Collector.open(node_b.ws, "watcher")
    victims = [await Collector.open(node_a.ws, f"victim{i}") for i in range(3)]
    try:
        await watcher.subscribe(room)
        for v in victims:
            await v.subscribe(room)
            await v.subscribe("room:elsewhere")
        ids = {v.client for v in victims}
        await watcher.wait_for(
            lambda f: f["type"] == "join" and f.get("client") in ids, 5, "join frames of A's clients", count=3
        )
        await wait_doc(
            control,
            lambda d: members_by_id(d, "node").get(node_a.id, {}).get("connections") == 3,
            5,
            "A's three connections in the view",
        )
        await wait_indexed(cluster, node_a.id, 6 + 3)  # 2 presence entries and 1 connection per client
        before = registrations_of(cluster, node_a.id, ids)
        for kind in ("subs:", "presence:", "presence-exp:", "uconn:", "nodeidx:"):
            assert any(kind in line for line in before), (kind, before)  # the probe sees what is there
        cleanups = await metric(control, "herald_control_cleanups_total")
        cleaned_presence = await metric(control, "herald_control_cleaned_entries_total", kind="presence")

        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, node_a)
        doc = await wait_doc(
            control, _dead_and_cleaned(node_a.id), MEMBER_TIMEOUT + SLACK, "A to be marked dead and cleaned up"
        )
        took = time.monotonic() - killed_at
        assert took <= seconds(MEMBER_TIMEOUT + SLACK), took
        cleaned = members_by_id(doc, "node")[node_a.id]["cleaned"]
        # subscriptions: the room, room:elsewhere and three personal channels
        assert cleaned == {"subscriptions": 5, "presence": 6, "connections": 3}, cleaned
        assert members_by_id(doc, "node")[node_b.id]["state"] == "ready"

        assert registrations_of(cluster, node_a.id, ids) == []
        assert has_key(cluster, keys.cleaned_key(node_a.id)), "no tombstone for a paused node to find"
        leaves = await watcher.wait_for(
            lambda f: f["type"] == "leave" and f.get("client") in ids, 5, "leave frames of A's clients", count=3
        )
        assert {f["client"] for f in leaves} == ids and all(f["channel"] == room for f in leaves), leaves
        assert {f["user"] for f in leaves} == {f"victim{i}" for i in range(3)}, leaves
        status, presence = await admin(cluster.routers[0], "GET", f"/api/presence/{room}")
        assert status == 200 and [c["client"] for c in presence["clients"]] == [watcher.client], presence

        assert await metric(control, "herald_control_cleanups_total") == cleanups + 1
        assert await metric(control, "herald_control_cleaned_entries_total", kind="presence") == cleaned_presence + 6
        assert await metric(control, "herald_control_cleaned_entries_total", kind="connections") >= 3
        assert await metric(control, "herald_control_members", role="node", state="dead") == 1
        assert '"control.member.dead"' in control.proc.output()
    finally:
        for c in (watcher, *victims):
            await c.close()


async def test_a_paused_node_is_cleaned_up_then_registers_again_and_its_clients_resume(
    cluster_factory: Callable[..., Cluster], namespaces: str
) -> None:
    """SIGSTOP node A for longer than member_timeout: control cleans it up like a crashed node
    (leave events, registrations gone). A message published meanwhile is not routed to A. After
    SIGCONT, A's next heartbeat finds the tombstone: A registers again and asks its clients to
    reconnect (advisory + 1012); a resuming client of A gets the message it missed exactly once,
    then the live ones, through A itself."""
    cluster = cluster_factory(
        shards=1,
        routers=1,
        nodes=2,
        controls=1,
        node_args=("--config", namespaces),
        router_args=("--config", namespaces),
        control_args=("--config", namespaces, "--member-timeout", str(MEMBER_TIMEOUT)),
    )
    control, router = cluster.controls[0], cluster.routers[0]
    node_a, node_b = cluster.nodes
    room = "room:pause"
    watcher = await Collector.open(node_b.ws, "watcher")
    await watcher.subscribe(room)
    sleeper = ResumingClient([node_a.ws], "sleeper", [room])  # reconnects to A only
    pid = node_a.proc.proc.pid
    published: dict[str, list[Pub]] = {room: []}

    async def publish(data: str) -> Pub:
        status, body = await admin(router, "POST", "/api/publish", {"channel": room, "data": data})
        assert status == 200, body
        pub = Pub(body["offset"], body["epoch"], data)
        published[room].append(pub)
        return pub

    try:
        async with running([sleeper]):
            await publish("before")
            _status, presence = await admin(router, "GET", f"/api/presence/{room}")
            first_client = next(c["client"] for c in presence["clients"] if c["user"] == "sleeper")
            await wait_indexed(cluster, node_a.id, 2)

            os.kill(pid, signal.SIGSTOP)
            await wait_doc(control, _dead_and_cleaned(node_a.id), MEMBER_TIMEOUT + SLACK, "the paused node cleaned up")
            assert registrations_of(cluster, node_a.id, {first_client}) == []
            await watcher.wait_for(
                lambda f: f["type"] == "leave" and f.get("client") == first_client, 5, "the paused client's leave"
            )
            missed = await publish("while-paused")
            await watcher.wait_for(lambda f: f.get("offset") == missed.offset, 5, "the message on B")
            resumed_wall = time.time()
            os.kill(pid, signal.SIGCONT)

            await wait_doc(
                control,
                lambda d: (
                    _node_state(node_a.id, "ready")(d)
                    and members_by_id(d, "node")[node_a.id]["last_seen"] >= resumed_wall
                ),
                SLACK + 1,
                "A to heartbeat again as ready",
            )
            await eventually_true(
                lambda: sleeper.reconnects >= 1 and sleeper.ready,
                10,
                "the paused node's client to reconnect and resume",
            )
            assert sleeper.sessions[0].close_code == 1012, sleeper.summary()
            assert [a["reason"] for a in sleeper.sessions[0].advisories] == ["rebalance"], sleeper.sessions[0]
            assert sleeper.node == node_a.id
            await publish("after")
            await wait_delivered(published, [sleeper], timeout=10)
            report = check_no_loss(published, sleeper)
            assert sleeper.logs[room].resumed >= 1 and report["duplicates"] == 0, report
        assert not has_key(cluster, keys.cleaned_key(node_a.id)), "the tombstone was not consumed"
        output = node_a.proc.output()
        assert '"engine.node.cleaned_while_alive"' in output and '"node.resync"' in output
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        await watcher.close()


# --- the admin API's errors ---------------------------------------------------------------------------


async def test_admin_api_errors_have_the_contract_shape(cluster_factory: Callable[..., Cluster]) -> None:
    """401 without or with a wrong key (every admin endpoint), 404 for an unknown node, 400 for a
    bad drain window or body, 409 to drain a dead node — each as {"error":{"code","message"}};
    none of them counts as a drain request. A good request then answers 202."""
    cluster = cluster_factory(
        shards=1, routers=0, nodes=2, controls=1, control_args=("--member-timeout", str(MEMBER_TIMEOUT))
    )
    control = cluster.controls[0]
    live, doomed = cluster.nodes
    await wait_doc(control, lambda d: all(_node_state(n.id, "ready")(d) for n in cluster.nodes), 5, "both nodes")

    for method, path in (
        ("GET", "/admin/cluster"),
        ("POST", f"/admin/nodes/{live.id}/drain"),
        ("POST", "/admin/rebalance"),
    ):
        for key in (None, "wrong-key", ""):
            status, body = await admin(control, method, path, key=key)
            _error_shape(status, body, 401, "unauthorized")
        status, body = await asyncio.to_thread(
            control.proc.api, method, path, None, key=None, headers={"Authorization": "Bearer dev-key"}
        )
        _error_shape(status, body, 401, "unauthorized")
    assert (await admin(live, "GET", "/readyz", key=None))[0] == 200  # none of that drained it

    status, body = await admin(control, "POST", "/admin/nodes/no-such-node/drain")
    _error_shape(status, body, 404, "not_found")
    assert "no-such-node" in body["error"]["message"]

    drain = f"/admin/nodes/{live.id}/drain"
    for bad in ({"window": -1}, {"window": "2"}, {"window": True}, {"window": 3601}, {"window": [1]}):
        status, body = await admin(control, "POST", drain, bad)
        _error_shape(status, body, 400, "bad_request")
    for raw in (b"[1, 2]", b"{not json", b'"a string"'):
        status, body = await admin(control, "POST", drain, raw=raw)
        _error_shape(status, body, 400, "bad_request")
    assert await metric(control, "herald_control_drain_requests_total") == 0

    await asyncio.to_thread(cluster.kill, doomed)
    await wait_doc(control, _node_state(doomed.id, "dead"), MEMBER_TIMEOUT + SLACK, "the killed node dead")
    status, body = await admin(control, "POST", f"/admin/nodes/{doomed.id}/drain", {"window": 1})
    _error_shape(status, body, 409, "conflict")
    assert doomed.id in body["error"]["message"]
    assert await metric(control, "herald_control_drain_requests_total") == 0

    status, body = await admin(control, "POST", drain, {"window": 0.5})
    assert (status, body) == (202, {"node": live.id, "state": "draining", "window": 0.5})
    await wait_doc(control, _node_state(live.id, "draining", "drained"), 5, "the drained node's state")
    assert await metric(control, "herald_control_drain_requests_total") == 1
    assert (await admin(live, "GET", "/readyz", key=None))[0] == 503
    status, body = await admin(control, "POST", "/admin/rebalance")
    assert status == 200 and body["status"] == "balanced", body  # no ready node left to balance


# --- limits across the cluster ---------------------------------------------------------------------------


async def test_per_user_limit_holds_across_nodes_and_a_dead_nodes_connections_stop_counting(
    cluster_factory: Callable[..., Cluster],
) -> None:
    """--max-connections-per-user 2, one connection of the user on each node: a third is refused
    with 4029 on either node, and only the refusing node's herald_limit_refusals_total
    {reason="user_limit"} moves. After kill -9 of node A its connection still counts (a crash
    releases nothing) until control cleaned A up; then the user may connect again on B."""
    cluster = cluster_factory(
        shards=1,
        routers=1,
        nodes=2,
        controls=1,
        node_args=("--max-connections-per-user", "2"),
        control_args=("--member-timeout", str(MEMBER_TIMEOUT)),
    )
    control = cluster.controls[0]
    node_a, node_b = cluster.nodes
    user = "limited"
    held = [await Collector.open(node_a.ws, user), await Collector.open(node_b.ws, user)]
    try:
        refused = {m.id: await metric(m, "herald_limit_refusals_total", reason="user_limit") for m in cluster.nodes}
        assert await _connect_outcome(node_b.ws, user) == 4029
        assert await metric(node_b, "herald_limit_refusals_total", reason="user_limit") == refused[node_b.id] + 1
        assert await metric(node_a, "herald_limit_refusals_total", reason="user_limit") == refused[node_a.id]
        assert await _connect_outcome(node_a.ws, user) == 4029
        assert await metric(node_a, "herald_limit_refusals_total", reason="user_limit") == refused[node_a.id] + 1
        assert await _connect_outcome(node_b.ws, "someone-else") == "connected"

        await wait_indexed(cluster, node_a.id, 1)
        await asyncio.to_thread(cluster.kill, node_a)
        assert await _connect_outcome(node_b.ws, user) == 4029, "a crashed node's connection stopped counting early"
        doc = await wait_doc(control, _dead_and_cleaned(node_a.id), MEMBER_TIMEOUT + SLACK, "A cleaned up")
        assert members_by_id(doc, "node")[node_a.id]["cleaned"]["connections"] == 1

        extra = await Collector.open(node_b.ws, user)  # A's connection no longer counts
        held.append(extra)
        assert await _connect_outcome(node_b.ws, user) == 4029  # but the limit still holds
        assert await metric(node_b, "herald_limit_refusals_total", reason="user_limit") == refused[node_b.id] + 3
        assert held[1].close_code is None and extra.close_code is None
    finally:
        for c in held:
            await c.close()
