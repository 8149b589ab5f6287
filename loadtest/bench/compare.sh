#!/usr/bin/env bash
# Herald next to its peers, in one run, with ../shared/bench (see its README; run its setup.sh once).
# Usage: loadtest/bench/compare.sh [TAG]   — results under $BENCH_HOME/results, summary at the end.
# Single node: herald dev vs aiohttp-raw and nchan; cluster path (loadtest/bench/cluster.sh: Redis +
# router + node, all on the server CPU) vs nchan-redis. Redis command counts go to $BENCH_HOME.
# Ends with the harness's summary and loadtest/bench/ratios.py (Herald / peer against the targets).
set -uo pipefail
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$HERE/../shared/bench}"
export BENCH_HOME="${BENCH_HOME:-$HOME/.cache/herald-bench}"
TAG="${1:-cmp$(date +%H%M)}"
DEV="exec herald dev --host 127.0.0.1 --port 18084 --log-level warning"
run() { "$BENCH/run.sh" "$@" --tag "$TAG" || echo "step failed: $*" >&2; }

for sys in herald aiohttp-raw nchan; do HERALD_CMD="$DEV" run "$sys" A --n-list 5000,19000; done
for sys in herald aiohttp-raw nchan; do HERALD_CMD="$DEV" run "$sys" B --rates 5,10,15,20,25,30 --duration 6; done
for sys in herald aiohttp-raw nchan; do HERALD_CMD="$DEV" run "$sys" C --rates 5,10,15,20 --duration 6; done
for sys in herald aiohttp-raw nchan; do HERALD_CMD="$DEV" run "$sys" D --rates 10000,12500,15000,17500,20000,22500 --duration 6; done
export HERALD_BENCH_STATS="$BENCH_HOME/results/cluster_${TAG}_D.stats"
HERALD_CMD="exec $HERE/loadtest/bench/cluster.sh" run herald D --rates 5000,6000,7000,8000,9000 --duration 6
export HERALD_BENCH_STATS="$BENCH_HOME/results/cluster_${TAG}_B.stats"
HERALD_CMD="exec $HERE/loadtest/bench/cluster.sh" run herald B --rates 5,10,15 --duration 6
unset HERALD_BENCH_STATS
run nchan-redis D --rates 6000,7500,9000,10500,12000 --duration 6
"$BENCH_HOME/venv/bin/python" "$BENCH/harness/summarize.py" --tag "$TAG"
"$BENCH_HOME/venv/bin/python" "$HERE/loadtest/bench/ratios.py" "$TAG"
