"""The Python SDK on the same load as node_client.mjs: one connection, N subscriptions (their
events on the client's own stream, `queue=False`), counting messages until EXPECTED arrived."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

from herald.client import HeraldClient, Message


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main() -> None:
    env = os.environ
    n, expected = int(env.get("CHANNELS", "1000")), int(env["EXPECTED"])
    async with HeraldClient(env["URL"], token=env["TOKEN"], codec=env.get("CODEC", "json")) as client:  # type: ignore[arg-type]
        await asyncio.gather(*(client.subscribe(f"bench:{i}", queue=False) for i in range(n)))
        print("ready", flush=True)
        count, t0, c0 = 0, 0.0, 0.0
        async with asyncio.timeout(float(env.get("TIMEOUT_S", "120"))):
            async for ev in client:
                if isinstance(ev, Message):
                    if count == 0:
                        t0, c0 = time.perf_counter(), cpu()
                    count += 1
                    if count == expected:
                        break
        wall, used = time.perf_counter() - t0, cpu() - c0
        print(
            json.dumps(
                {
                    "client": "python",
                    "messages": count,
                    "wall_s": wall,
                    "cpu_s": used,
                    "duplicates": client.stats.duplicates,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
