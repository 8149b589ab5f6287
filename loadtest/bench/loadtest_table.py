"""`herald loadtest` scenarios against `herald dev` and a local cluster, as one table.

Starts each system on loopback in its own process group (`herald dev` with the in-memory engine;
`cluster.sh`: redis-server + a router + a node), runs every step with `herald loadtest --json`,
measures the server's CPU from /proc over each step, stops the system (its process group, which
this script created) and prints a markdown table. Every step is bounded by its duration and a
hard timeout.

    python loadtest/bench/loadtest_table.py                      # both systems, default steps
    python loadtest/bench/loadtest_table.py --systems dev --duration 5 --pin --json-out results.json
    python loadtest/bench/loadtest_table.py --step "fanout ws 2000 10" --step "direct sse 2000 2000"

A step is "SCENARIO TRANSPORT CONNECTIONS RATE [extra loadtest args...]".
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_STEPS = (
    "fanout ws 1000 10",
    "fanout sse 1000 10",
    "direct ws 1000 1000",
    "direct sse 1000 1000 --direct-via notify",
    "chat ws 500 500",
    "reconnect-storm ws 500 20 --storm-downtime 0.2",
)
SECRET, KEY = "bench-secret", "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_ticks(pgid: int) -> int:
    """utime + stime of every process in the process group `pgid` (Linux /proc)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp), counted after the command name
            total += int(fields[11]) + int(fields[12])
    return total


class System:
    def __init__(self, name: str, pin: bool) -> None:
        self.name = name
        self.port = free_port()
        self.pin = pin
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        env = {**os.environ, "HERALD_JWT_SECRET": SECRET, "HERALD_API_KEY": KEY, "HERALD_LOG_LEVEL": "warning"}
        if self.name == "dev":
            argv = [
                sys.executable,
                "-m",
                "herald",
                "dev",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ]
        else:
            env.update(HERALD_PORT=str(self.port), HERALD_BENCH_REDIS_PORT=str(free_port()))
            argv = ["bash", os.path.join(HERE, "cluster.sh")]
        if self.pin and shutil.which("taskset"):
            argv = ["taskset", "-c", "0", *argv]
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready on {self.url}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group this script created
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self.proc = None


def run_step(system: System, step: str, args: argparse.Namespace) -> dict[str, Any]:
    scenario, transport, conns, rate, *extra = shlex.split(step)
    argv = [
        sys.executable,
        "-m",
        "herald",
        "loadtest",
        scenario,
        "--transport",
        transport,
        "--url",
        system.url,
        "--connections",
        conns,
        "--rate",
        rate,
        "--duration",
        str(args.duration),
        "--workers",
        str(args.workers),
        "--jwt-secret",
        SECRET,
        "--api-key",
        KEY,
        "--json",
        *extra,
    ]
    if args.pin and shutil.which("taskset"):
        argv = ["taskset", "-c", "1", *argv]
    assert system.proc is not None
    hz = os.sysconf("SC_CLK_TCK")
    ticks0, t0 = cpu_ticks(system.proc.pid), time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=args.duration + 120)
    except subprocess.TimeoutExpired:
        return {"system": system.name, "step": step, "error": "timeout"}
    server_cpu = (cpu_ticks(system.proc.pid) - ticks0) / hz / max(1e-9, time.monotonic() - t0)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        return {"system": system.name, "step": step, "error": done.stderr.decode()[-300:] or f"exit {done.returncode}"}
    d, lat = report["delivered"], report["latency_ms"]
    return {
        "system": system.name,
        "step": step,
        "exit": done.returncode,
        "delivered_per_s": d["per_s"],
        "published_per_s": report["published"]["per_s"],
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "max_ms": lat.get("max"),
        "lost": d["lost"],
        "duplicated": d["duplicated"],
        "out_of_order": d["out_of_order"],
        "reconnects": report["connections"]["reconnects"],
        "server_cpu_pct": round(server_cpu * 100),
        "report": report,
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = (
        "system",
        "step",
        "exit",
        "delivered_per_s",
        "published_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "lost",
        "duplicated",
        "out_of_order",
        "reconnects",
        "server_cpu_pct",
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['system']} | {row['step']} | error: {row['error'].strip()} |")
        else:
            lines.append("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="dev,cluster", help="comma-separated: dev, cluster")
    ap.add_argument("--step", action="append", dest="steps", help="a step (repeatable); default: a standard set")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of publishing per step")
    ap.add_argument("--workers", type=int, default=1, help="loadtest worker processes")
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, load on CPU 1 (taskset)")
    ap.add_argument("--json-out", help="also write every row (with its full report) to this file")
    args = ap.parse_args()
    rows = []
    for name in args.systems.split(","):
        if name not in ("dev", "cluster"):
            ap.error(f"unknown system {name!r}")
        system = System(name, args.pin)
        system.start()
        try:
            for step in args.steps or DEFAULT_STEPS:
                row = run_step(system, step, args)
                rows.append(row)
                print(
                    f"{name:8} {step:45} -> "
                    + (
                        row.get("error") or f"{row['delivered_per_s']} dl/s, p99 {row['p99_ms']} ms, lost {row['lost']}"
                    ),
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            system.stop()
    print(table(rows))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r.get("exit") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
