"""Redis commands per delivered message on the cluster path (INFO commandstats deltas).

Starts redis-server, `herald router` and `herald node` on loopback, connects N WebSocket clients,
then measures, for per-user messages and for a broadcast, the Redis commands executed (including
the ones inside Lua scripts) and the EVALSHA round trips per delivered message.

    python loadtest/bench/redis_commands.py --clients 1000 --messages 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp
import redis

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.conftest import make_token
from tests.e2e.server import start_herald
from tests.redis_server import start_redis


def commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")  # {"cmdstat_xadd": {"calls": n, ...}, ...}
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=3000, help="per-user messages")
    ap.add_argument("--broadcasts", type=int, default=50)
    ap.add_argument("--batch", type=int, default=0, help="also measure POST /api/publish/batch with this size")
    a = ap.parse_args()
    shard = start_redis()
    env = {"HERALD_JWT_SECRET": "dev-secret", "HERALD_API_KEY": "dev-key", "HERALD_REDIS": shard.url}
    router = start_herald(command="router", env=env)
    node = start_herald(command="node", env=env)
    rc = shard.client()
    got = {"n": 0}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            conns = []
            for i in range(a.clients):
                ws = await http.ws_connect(f"{node.ws}?token={make_token(f'u{i}', channels=['*'])}")
                await ws.receive()
                for ch in (f"u{i}", "bcast"):
                    await ws.send_str(json.dumps({"type": "subscribe", "channel": ch, "id": 1}))
                    while json.loads((await ws.receive()).data).get("type") != "subscribed":
                        pass
                conns.append(ws)

            async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
                async for msg in ws:
                    if '"type":"message"' in msg.data:
                        got["n"] += 1

            readers = [asyncio.ensure_future(reader(ws)) for ws in conns]
            headers = {"Authorization": "apikey dev-key"}

            async def run(label: str, bodies: list[dict[str, Any]], expected: int, path: str = "/api/publish") -> None:
                got["n"] = 0
                before = commandstats(rc)
                sem = asyncio.Semaphore(16)

                async def post(body: dict[str, Any]) -> None:
                    async with sem, http.post(f"{node.http}{path}", json=body, headers=headers) as r:
                        assert r.status == 200, await r.text()

                t = time.monotonic()
                await asyncio.gather(*(post(b) for b in bodies))
                while got["n"] < expected and time.monotonic() - t < 60:
                    await asyncio.sleep(0.01)
                d = delta(before, commandstats(rc))
                d.pop("info", None)
                total = sum(d.values())
                print(
                    f"{label}: {len(bodies)} requests, {got['n']}/{expected} delivered in "
                    f"{time.monotonic() - t:.1f}s; Redis commands {total} "
                    f"({total / max(got['n'], 1):.2f} per delivered message, incl. inside Lua); "
                    f"EVALSHA {d.get('evalsha', 0)}, XREADGROUP {d.get('xreadgroup', 0)}, "
                    f"XREAD {d.get('xread', 0)}; top: {sorted(d.items(), key=lambda kv: -kv[1])[:8]}"
                )

            await run("per-user", [{"channel": f"u{i % a.clients}", "data": i} for i in range(a.messages)], a.messages)
            if a.batch:
                msgs = [{"channel": f"u{i % a.clients}", "data": i} for i in range(a.messages)]
                await run(
                    f"per-user, batches of {a.batch}",
                    [{"messages": msgs[k : k + a.batch]} for k in range(0, len(msgs), a.batch)],
                    a.messages,
                    "/api/publish/batch",
                )
            await run(
                "broadcast", [{"channel": "bcast", "data": i} for i in range(a.broadcasts)], a.broadcasts * a.clients
            )
            for r in readers:
                r.cancel()
    finally:
        node.stop()
        router.stop()
        shard.stop()


if __name__ == "__main__":
    asyncio.run(main())
