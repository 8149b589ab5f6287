"""The JS client's own cost next to the Python SDK's: one client process holding 1,000
subscriptions on one connection while `POST /api/broadcast` sends one message to each of them,
ROUNDS times. Reports messages/s and the client's CPU per message.

    python clients/js/bench/run.py [--rounds 50] [--channels 1000] [--codec json] [--repeat 3]

Loopback only and bounded: a fresh `herald dev` per run (pinned to CPU 0 when taskset exists, the
client on CPU 1), ROUNDS broadcasts, every process stopped by its pid at the end. Needs
`node build.mjs` first (dist/) and herald installed for this interpreter.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKSET = shutil.which("taskset")


def pin(cpu: int, argv: list[str]) -> list[str]:
    return [TASKSET, "-c", str(cpu), *argv] if TASKSET and (os.cpu_count() or 1) > 1 else argv


def token(user: str) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    head, body = (
        enc({"alg": "HS256", "typ": "JWT"}),
        enc({"sub": user, "exp": int(time.time()) + 3600, "channels": ["bench:*"]}),
    )
    sig = hmac.new(b"dev-secret", f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def start_herald(channels: int) -> tuple[subprocess.Popen[str], str]:
    argv = pin(
        0,
        [
            sys.executable,
            "-m",
            "herald",
            "dev",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-format",
            "json",
            "--max-subscriptions",
            str(channels + 1),
            "--history-size",
            "100",
            "--client-rate",
            "100000",
            "--client-burst",
            str(2 * channels),
        ],
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        m = '"node.started"' in line and re.search(r'"port":(\d+)', line)
        if m:
            return proc, f"http://127.0.0.1:{m.group(1)}"
    proc.kill()
    raise RuntimeError("herald dev did not start")


def broadcast(url: str, channels: int, i: int) -> None:
    body = json.dumps({"channels": [f"bench:{c}" for c in range(channels)], "data": {"i": i, "pad": "x" * 64}})
    req = urllib.request.Request(
        url + "/api/broadcast",
        data=body.encode(),
        method="POST",
        headers={"Authorization": "apikey dev-key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()


def run_once(kind: str, rounds: int, channels: int, codec: str) -> dict[str, float]:
    server, url = start_herald(channels)
    argv = (
        [shutil.which("node") or "node", str(HERE / "node_client.mjs")]
        if kind == "node"
        else [sys.executable, str(HERE / "python_client.py")]
    )
    env = {
        **os.environ,
        "URL": url,
        "TOKEN": token(f"bench-{kind}"),
        "CHANNELS": str(channels),
        "EXPECTED": str(rounds * channels),
        "CODEC": codec,
    }
    client = subprocess.Popen(pin(1, argv), env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} client did not get ready")
        for i in range(rounds):
            broadcast(url, channels, i)
        result = json.loads(client.stdout.readline())
        client.wait(timeout=30)
    finally:
        for proc in (client, server):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    result["msgs_per_s"] = result["messages"] / result["wall_s"]
    result["cpu_us_per_msg"] = result["cpu_s"] / result["messages"] * 1e6
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--channels", type=int, default=1000)
    ap.add_argument("--codec", choices=("json", "msgpack"), default="json")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clients", default="node,python")
    args = ap.parse_args()
    print(
        f"{args.channels} subscriptions on one connection, {args.rounds} broadcasts, codec {args.codec}, "
        f"median of {args.repeat}"
    )
    print("| client | messages | msgs/s | client CPU µs/msg | duplicates |\n|---|---|---|---|---|")
    for kind in args.clients.split(","):
        runs = [run_once(kind, args.rounds, args.channels, args.codec) for _ in range(args.repeat)]
        rate = statistics.median(r["msgs_per_s"] for r in runs)
        cost = statistics.median(r["cpu_us_per_msg"] for r in runs)
        print(
            f"| {kind} | {runs[0]['messages']} | {rate:,.0f} | {cost:.1f} | {sum(r['duplicates'] for r in runs)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
