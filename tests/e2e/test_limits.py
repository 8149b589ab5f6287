"""Limits hit on purpose against a real `herald dev` process: each gives the contract's code
(CONTRACT.md §5, §7), shows up in /metrics, and the node keeps serving everyone else.

Nodes are module-scoped and grouped by the options they need; each test starts by waiting until
the node has released the connections of earlier tests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import make_token, seconds
from tests.e2e.server import HeraldProcess
from tests.e2e.test_bad_input import (
    RawWs,
    api,
    assert_error,
    assert_error_body,
    assert_pong,
    closed_code,
    get_metric,
    metric,
    metrics_text,
    publish,
    recv_obj,
    recv_until,
    refused_after_upgrade,
    reply,
    request,
    send_obj,
    serve,
    settled,
    sse_expect_error,
    sse_expect_stream,
    sse_open,
    uid,
    wait_for,
    wait_metric,
    watching,
    ws_client,
    ws_open,
)

REFUSALS = "herald_limit_refusals_total"
CLOSED = "herald_connections_closed_total"
ERRORS = "herald_client_errors_total"


def _node(*args: str) -> Any:
    @pytest.fixture(scope="module")
    def fixture() -> Iterator[HeraldProcess]:
        server = serve(*args)
        yield server
        server.stop()

    return fixture


limited = _node(
    "--max-connections-per-user",
    "2",
    "--max-subscriptions",
    "3",
    "--client-rate",
    "5",
    "--client-burst",
    "5",
    "--max-message-size",
    "1024",
)
small_node = _node("--max-connections", "3")
ip_limited = _node("--max-connections-per-ip", "2")
idle_node = _node("--idle-timeout", "1")
pinging = _node("--ping-interval", "1")
slow_node = _node("--send-buffer", "65536")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _connects(server: HeraldProcess, user: str) -> bool:
    """Whether a new connection for `user` is accepted now (connected) rather than closed."""
    ws = await ws_open(server, make_token(user))
    try:
        first = await recv_obj(ws)
        return first.get("type") == "connected"
    except Exception:
        return False
    finally:
        await ws.close()


# ==============================================================================================
# Connection limits
# ==============================================================================================


async def test_per_user_connection_limit(limited: HeraldProcess) -> None:
    await settled(limited)
    user = f"busy-{uid()}"
    before = await get_metric(limited, REFUSALS, reason="user_limit")
    async with watching(limited) as w:
        async with ws_client(limited, user) as ws1, ws_client(limited, user):
            # the third WebSocket of the same user: upgraded, then closed 4029 without `connected`
            async with ws_client(limited, user, expect_connected=False) as ws3:
                assert await refused_after_upgrade(ws3) == 4029
            # the third SSE stream: HTTP 429 with the JSON error body
            await sse_expect_error(await sse_open(limited, f"?token={make_token(user)}"), 429)

            await assert_pong(ws1)  # the user's admitted connections are untouched
            await w.alive()
            assert await get_metric(limited, REFUSALS, reason="user_limit") == before + 2
            # other users are not limited by this one
            async with ws_client(limited, f"other-{uid()}") as other:
                await assert_pong(other)
        # once the user's connections are gone, the user may connect again
        await wait_for(lambda: _connects(limited, user))
        resp = await sse_open(limited, f"?token={make_token(user)}")
        try:
            await sse_expect_stream(resp)
        finally:
            await resp.close()
        await w.alive()


async def test_per_user_connection_limit_with_first_message_auth(limited: HeraldProcess) -> None:
    await settled(limited)
    user = f"busy-{uid()}"
    before = await get_metric(limited, REFUSALS, reason="user_limit")
    async with watching(limited) as w, ws_client(limited, user) as ws1, ws_client(limited, user):
        async with ws_client(limited, expect_connected=False) as ws3:
            await send_obj(ws3, {"type": "auth", "token": make_token(user)})
            assert await refused_after_upgrade(ws3) == 4029
        await assert_pong(ws1)
        await w.alive()
        assert await get_metric(limited, REFUSALS, reason="user_limit") == before + 1


async def test_per_node_connection_limit(small_node: HeraldProcess) -> None:
    await settled(small_node)
    before = await metrics_text(small_node)
    async with watching(small_node) as w:  # connection 1 of 3
        async with ws_client(small_node, f"a-{uid()}") as a, ws_client(small_node, f"b-{uid()}"):
            async with ws_client(small_node, f"c-{uid()}", expect_connected=False) as extra:
                assert await refused_after_upgrade(extra) == 1013
            await sse_expect_error(await sse_open(small_node, f"?token={make_token(f'd-{uid()}')}"), 503)
            await w.alive()
            await assert_pong(a)
            after = await metrics_text(small_node)
            assert metric(after, REFUSALS, reason="node_full") == metric(before, REFUSALS, reason="node_full") + 2
        # room again once connections close
        await wait_for(lambda: _connects(small_node, f"e-{uid()}"))
        await w.alive()
    status, body = await api(small_node, "GET", "/healthz", key=None)
    assert status == 200, body


async def test_per_ip_connection_limit(ip_limited: HeraldProcess) -> None:
    await settled(ip_limited)
    before = await get_metric(ip_limited, REFUSALS, reason="ip_limit")
    async with watching(ip_limited, local_addr=("127.0.0.2", 0)) as w:  # another address
        async with ws_client(ip_limited, f"a-{uid()}") as a, ws_client(ip_limited, f"b-{uid()}"):
            async with ws_client(ip_limited, f"c-{uid()}", expect_connected=False) as extra:
                assert await refused_after_upgrade(extra) == 1013
            await sse_expect_error(await sse_open(ip_limited, f"?token={make_token(f'd-{uid()}')}"), 503)
            # other addresses are not affected
            async with ws_client(ip_limited, f"e-{uid()}", local_addr=("127.0.0.3", 0)) as other:
                await assert_pong(other)
            resp = await sse_open(ip_limited, f"?token={make_token(f'f-{uid()}')}", local_addr=("127.0.0.3", 0))
            try:
                await sse_expect_stream(resp)
            finally:
                await resp.close()
            await w.alive()
            await assert_pong(a)
            assert await get_metric(ip_limited, REFUSALS, reason="ip_limit") == before + 2
        await wait_for(lambda: _connects(ip_limited, f"g-{uid()}"))
        await w.alive()


# ==============================================================================================
# Message size, rate, subscriptions
# ==============================================================================================


async def test_message_size_limit(limited: HeraldProcess) -> None:
    await settled(limited)
    channel = f"room:size-{uid()}"
    before = await get_metric(limited, CLOSED, transport="ws", code="1009")
    async with watching(limited) as w:
        async with ws_client(limited, f"u-{uid()}") as ws:
            frame = json.dumps({"type": "publish", "channel": channel, "data": "x" * 900, "id": 1})
            assert len(frame) <= 1024
            await ws.send(frame)
            assert (await reply(ws, 1))["type"] == "published"
            await ws.send(json.dumps({"type": "publish", "channel": channel, "data": "x" * 1100}))
            assert await closed_code(ws) == 1009
        await w.alive()

        ok = json.dumps({"channel": channel, "data": "y" * 900}).encode()
        status, body = await api(limited, "POST", "/api/publish", raw=ok)
        assert status == 200, body
        over = json.dumps({"channel": channel, "data": "y" * 1100}).encode()
        status, body = await api(limited, "POST", "/api/publish", raw=over)
        assert status == 413, body
        assert_error_body(body)
        status, body = await api(limited, "GET", f"/api/history/{channel}")
        assert [m["data"] for m in body["messages"]] == ["x" * 900, "y" * 900]
        await w.alive()
    await wait_metric(limited, CLOSED, before + 1, "a 1009 close must be counted as 1009", transport="ws", code="1009")


async def test_client_rate_limit(limited: HeraldProcess) -> None:
    await settled(limited)
    before = await get_metric(limited, ERRORS, code="429")
    async with watching(limited) as w:
        async with ws_client(limited, f"flood-{uid()}") as ws:
            for i in range(1, 31):
                await send_obj(ws, {"type": "ping", "id": i})
            answers: dict[int, Any] = {}
            async with asyncio.timeout(seconds(5)):
                while len(answers) < 30:
                    obj = await recv_obj(ws)
                    assert obj["id"] not in answers, f"answered twice: {obj}"
                    answers[obj["id"]] = obj
            limited_ids = [i for i, o in answers.items() if o["type"] == "error"]
            for i in limited_ids:
                assert_error(answers[i], 429, i)
            pongs = [i for i, o in answers.items() if o == {"type": "pong", "id": i}]
            assert len(limited_ids) + len(pongs) == 30, answers
            assert limited_ids, "a flood of 30 messages at 5/s (burst 5) must be rate limited"
            assert len(pongs) >= 5, "the burst is served"

            # the connection stays open and is served again once the bucket refills
            async def served() -> bool:
                got = await request(ws, {"type": "ping", "id": 1000})
                return got["type"] == "pong"

            await wait_for(served, interval=0.25)
            await w.alive()
        assert await get_metric(limited, ERRORS, code="429") >= before + len(limited_ids), (
            "429 error replies are not counted in herald_client_errors_total"
        )


async def test_subscription_limit(limited: HeraldProcess) -> None:
    await settled(limited)
    before = await get_metric(limited, ERRORS, code="403")
    async with watching(limited) as w:
        async with ws_client(limited, f"u-{uid()}") as ws:  # the personal channel is one of the 3
            for i, channel in enumerate(["room:a", "room:b"], 1):
                got = await request(ws, {"type": "subscribe", "channel": channel, "id": i})
                assert got["type"] == "subscribed", got
            got = await request(ws, {"type": "subscribe", "channel": "room:c", "id": 3})
            assert_error(got, 403, 3)
            got = await request(ws, {"type": "subscribe", "channel": "room:a", "id": 4})  # already held
            assert got["type"] == "subscribed", got
            await assert_pong(ws)
            await w.alive()
        assert await get_metric(limited, ERRORS, code="403") >= before + 1, (
            "403 error replies are not counted in herald_client_errors_total"
        )


# ==============================================================================================
# Timers: token expiry, idleness, dead peers
# ==============================================================================================


async def test_token_expiry_closes_4001_unless_refreshed(limited: HeraldProcess) -> None:
    await settled(limited)
    before = await get_metric(limited, CLOSED, transport="ws", code="4001")
    exp = int(time.time()) + 2
    expiring, refreshing = f"exp-{uid()}", f"ref-{uid()}"
    async with (
        watching(limited) as w,
        ws_client(limited, expiring, token=make_token(expiring, exp=exp)) as a,
        ws_client(limited, refreshing, token=make_token(refreshing, exp=exp)) as b,
    ):
        got = await request(b, {"type": "refresh", "token": make_token(refreshing, ttl=600), "id": 1})
        assert got["type"] == "refreshed" and got["exp"] > exp + 500, got
        await assert_pong(a)  # still valid before exp

        assert await closed_code(a, timeout=exp - time.time() + 3) == 4001
        assert time.time() >= exp - 0.1, "closed before the token expired"
        # the tick that expired `a` has passed `b` too: it must still be served
        await assert_pong(b)
        await w.alive()
    await wait_metric(limited, CLOSED, before + 1, transport="ws", code="4001")


async def test_idle_connection_is_closed_4000(idle_node: HeraldProcess) -> None:
    await settled(idle_node)
    before = await get_metric(idle_node, CLOSED, transport="ws", code="4000")
    channel = f"room:busy-{uid()}"
    async with ws_client(idle_node, f"busy-{uid()}") as busy, ws_client(idle_node, f"idle-{uid()}") as quiet:
        assert (await request(busy, {"type": "subscribe", "channel": channel, "id": 1}))["type"] == "subscribed"

        async def keep_busy() -> None:
            n = 100
            while True:
                n += 1
                await send_obj(busy, {"type": "ping", "id": n})
                await asyncio.sleep(0.25)

        pinger = asyncio.create_task(keep_busy())
        try:
            started = time.monotonic()
            assert await closed_code(quiet, timeout=4) == 4000
            assert time.monotonic() - started >= 0.5, "closed long before the idle timeout"
            # the busy connection, which had traffic all along, is still served
            await publish(idle_node, channel, "still here")
            got = await recv_until(busy, lambda o: o.get("type") == "message")
            assert got["data"] == "still here"
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
    await wait_metric(idle_node, CLOSED, before + 1, transport="ws", code="4000")


async def test_dead_connection_is_terminated(pinging: HeraldProcess) -> None:
    """--ping-interval 1: a client that never answers pings reaches EOF within ~2 intervals."""
    await settled(pinging)
    interval = 1.0
    async with watching(pinging) as w:  # a well-behaved client (websockets answers pings)
        before = await get_metric(pinging, "herald_connections", transport="ws")
        dead = await RawWs.open(pinging, make_token(f"dead-{uid()}"))
        opened = time.monotonic()
        try:
            pings = 0
            close_code = None
            async with asyncio.timeout(seconds(30)):
                while (frame := await dead.read_frame()) is not None:
                    opcode, payload = frame
                    if opcode == 0x9:
                        pings += 1  # ... and never a pong
                    elif opcode == 0x8 and len(payload) >= 2:
                        close_code = int.from_bytes(payload[:2], "big")
            elapsed = time.monotonic() - opened
        finally:
            await dead.close()
        assert pings >= 1, "the server never pinged"
        assert elapsed >= 2 * interval - 0.2, f"terminated after {elapsed:.1f}s, before two intervals"
        # two intervals, plus one tick of the 1 s timer, plus margin
        assert elapsed <= seconds(2 * interval + 1 + 2), (
            f"a dead connection lingered {elapsed:.1f}s (close frame {close_code}) before the socket was dropped"
        )
        # the server forgot it, and the client that answers pings survived the same time
        await wait_for(lambda: _metric_equals(pinging, "herald_connections", before, transport="ws"))
        await w.alive()


async def _metric_equals(server: HeraldProcess, name: str, value: float, **labels: str) -> bool:
    return await get_metric(server, name, **labels) == value


# ==============================================================================================
# Slow consumer
# ==============================================================================================


async def test_slow_consumer_is_disconnected(slow_node: HeraldProcess) -> None:
    await settled(slow_node)
    channel = f"room:slow-{uid()}"
    other = f"room:other-{uid()}"
    slow_before = await get_metric(slow_node, "herald_slow_consumers_total")
    rss_before = _rss_kib(slow_node.proc.pid)
    async with watching(slow_node) as w, ws_client(slow_node, f"peer-{uid()}") as peer:
        # a fast subscriber of the same channel must keep getting everything
        assert (await request(peer, {"type": "subscribe", "channel": channel, "id": 1}))["type"] == "subscribed"
        slow = await RawWs.open(slow_node, make_token(f"slow-{uid()}"), rcvbuf=4096)
        try:
            opcode, payload = await asyncio.wait_for(slow.read_frame(), seconds(5))  # type: ignore[misc]
            assert json.loads(payload)["type"] == "connected"
            slow.send_json({"type": "subscribe", "channel": channel, "id": 1})
            async with asyncio.timeout(seconds(5)):
                while True:
                    opcode, payload = await slow.read_frame()  # type: ignore[misc]
                    if json.loads(payload).get("type") == "subscribed":
                        break
            # ... and from now on it does not read. Flood its channel with 60 KB messages.
            peer_got = 0

            async def drain_peer() -> None:
                nonlocal peer_got
                async for raw in peer:
                    if json.loads(raw).get("type") == "message":
                        peer_got += 1

            reader = asyncio.create_task(drain_peer())
            data = "z" * 60_000
            statuses: list[int] = []
            try:
                async with asyncio.timeout(seconds(60)):
                    for i in range(400):
                        status, _ = await api(slow_node, "POST", "/api/publish", {"channel": channel, "data": data})
                        statuses.append(status)
                        if i % 10 == 9 and await get_metric(slow_node, "herald_slow_consumers_total") > slow_before:
                            break
                published = statuses.count(200)

                async def peer_has_all() -> bool:
                    return peer_got >= published

                await wait_for(peer_has_all, timeout=10)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            assert set(statuses) == {200}, f"publishing while a consumer is slow failed: {statuses}"
            assert peer_got == published, "a fast subscriber of the same channel got extra messages"
            assert await get_metric(slow_node, "herald_slow_consumers_total") == slow_before + 1, (
                "one slow connection must be counted once"
            )
            rss_after = _rss_kib(slow_node.proc.pid)
            assert rss_after - rss_before < 100 * 1024, f"RSS grew by {(rss_after - rss_before) // 1024} MB"

            # resume reading: the stream ends with reconnect(slow) and/or close 4008, or just ends
            advisory = close_code = None
            async with asyncio.timeout(seconds(15)):
                while (frame := await slow.read_frame()) is not None:
                    opcode, payload = frame
                    if opcode == 0x1 and b'"reconnect"' in payload[:64]:
                        advisory = json.loads(payload)
                    elif opcode == 0x8:
                        close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                        break
            if advisory is not None:
                assert advisory["reason"] == "slow", advisory
            if close_code is not None:
                assert close_code == 4008, close_code
        finally:
            await slow.close()
        await w.alive()
        await publish(slow_node, other, "after")
        status, body = await api(slow_node, "GET", f"/api/history/{other}")
        assert status == 200 and len(body["messages"]) == 1


async def test_sse_slow_consumer_is_disconnected(slow_node: HeraldProcess) -> None:
    """The same limit on an SSE stream: the stream ends with `event: reconnect` (slow)."""
    await settled(slow_node)
    channel = f"room:slow-sse-{uid()}"
    slow_before = await get_metric(slow_node, "herald_slow_consumers_total")
    async with watching(slow_node) as w:
        resp = await sse_open(slow_node, f"?channel={channel}&token={make_token(f'slow-{uid()}')}", rcvbuf=4096)
        try:
            await sse_expect_stream(resp)
            await wait_for(lambda: _subscribers(slow_node, channel, 1))
            # it stops reading; flood its channel
            data = "z" * 60_000
            statuses: list[int] = []
            async with asyncio.timeout(seconds(60)):
                for i in range(400):
                    status, _ = await api(slow_node, "POST", "/api/publish", {"channel": channel, "data": data})
                    statuses.append(status)
                    if i % 10 == 9 and await get_metric(slow_node, "herald_slow_consumers_total") > slow_before:
                        break
            assert set(statuses) == {200}, f"publishing while an SSE consumer is slow failed: {statuses}"
            assert await get_metric(slow_node, "herald_slow_consumers_total") == slow_before + 1, (
                "one slow stream must be counted once"
            )
            await w.alive()

            # resume reading: the stream ends (terminating chunk or EOF), after a reconnect event if any
            tail = b""
            async with asyncio.timeout(seconds(15)):
                try:
                    while (chunk := await resp._chunk()) is not None:
                        tail = (tail + chunk)[-4096:]
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
            if b"event: reconnect" in tail:
                line = tail.split(b"event: reconnect\n", 1)[1].split(b"\n", 1)[0]
                assert line.startswith(b"data: ") and json.loads(line[6:])["reason"] == "slow", tail[-300:]
        finally:
            await resp.close()
        await w.alive()


async def _subscribers(server: HeraldProcess, channel: str, n: int) -> bool:
    status, body = await api(server, "GET", f"/api/presence/{channel}/stats")
    return status == 200 and body["clients"] >= n
