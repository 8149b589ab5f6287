"""Herald against its peers, as ratios, from one `compare.sh` run of the shared harness.

    python loadtest/bench/ratios.py TAG [RESULTS_DIR]      # default: $BENCH_HOME/results

Reads the harness's results/*.json of that tag (the newest file per system and scenario; a Herald
run whose command started `cluster.sh` counts as `herald-cluster`) and prints, per scenario,
Herald's number, the peer's, their ratio and the issue's target.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any

# (label, herald system, peer system, scenario, metric, target ratio, higher is better)
TARGETS = [
    ("idle memory, KB per WS connection (19k)", "herald", "nchan", "A", "kb_per_conn", 1.0, False),
    ("connect rate with JWT, per s", "herald", "aiohttp-raw", "A", "connect_rate", 1.0, True),
    ("WS broadcast to N, max msg/s passing", "herald", "nchan", "B", "max_passing_rate", 1.0, True),
    ("SSE broadcast to N, max msg/s passing", "herald", "nchan", "C", "max_passing_rate", 1.0, True),
    ("per-user, one node, max msg/s passing", "herald", "aiohttp-raw", "D", "max_passing_rate", 1.0, True),
    ("per-user through Redis, max msg/s passing", "herald-cluster", "nchan-redis", "D", "max_passing_rate", 2.0, True),
]


def load(results: str, tag: str) -> dict[tuple[str, str], dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        try:
            with open(path) as f:
                run = json.load(f)
        except (OSError, ValueError):
            continue
        if run.get("args", {}).get("tag") != tag:
            continue
        system = run["system"]
        if system == "herald" and "cluster.sh" in (run.get("versions") or {}).get("cmd", ""):
            system = "herald-cluster"
        latest[(system, run["scenario"])] = run
    return latest


def metric(run: dict[str, Any] | None, name: str) -> float | None:
    if run is None:
        return None
    result = run.get("result") or {}
    if name == "max_passing_rate":
        value = result.get("max_passing_rate")
        return float(value) if value else None
    runs = result.get("runs") or []
    if not runs:
        return None
    if name == "kb_per_conn":  # the memory target is at the largest N (19,000 in compare.sh)
        value = max(runs, key=lambda r: r.get("n") or 0).get("kb_per_conn_pss")
    else:  # connect rate at the smallest N (5,000), like every other scenario
        value = (min(runs, key=lambda r: r.get("n") or 0).get("connect") or {}).get("connect_rate")
    return float(value) if value else None


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    tag = argv[0]
    results = (
        argv[1]
        if len(argv) > 1
        else os.path.join(os.environ.get("BENCH_HOME", os.path.expanduser("~/.cache/herald-bench")), "results")
    )
    runs = load(results, tag)
    print(f"| scenario (tag {tag}) | Herald | peer | Herald / peer | target | met |")
    print("|---|---|---|---|---|---|")
    for label, ours, peer, scenario, name, target, higher in TARGETS:
        a, b = metric(runs.get((ours, scenario)), name), metric(runs.get((peer, scenario)), name)
        if a is None or b is None:
            print(f"| {label} | {a or '–'} | {peer}: {b or '–'} | – | – | not measured |")
            continue
        ratio = a / b
        met = ratio >= target if higher else ratio <= target
        goal = f"≥ {target:g}×" if higher else f"≤ {target:g}×"
        print(f"| {label} | {a:,.1f} | {peer}: {b:,.1f} | {ratio:.2f} | {goal} | {'yes' if met else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
