#!/usr/bin/env bash
# Herald next to its peers, in one run, with ../shared/bench (see its README; run its setup.sh once).
# Usage: loadtest/bench/compare.sh [TAG]   — results under $BENCH_HOME/results, summary printed at the end.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
BENCH="${BENCH_DIR:-$HERE/../shared/bench}"
export BENCH_HOME="${BENCH_HOME:-$HOME/.cache/herald-bench}"
TAG="${1:-cmp$(date +%H%M)}"
export HERALD_CMD="${HERALD_CMD:-exec herald dev --host 127.0.0.1 --port 18084 --log-level warning}"
run() { "$BENCH/run.sh" "$@" --tag "$TAG" || echo "step failed: $*" >&2; }

run herald A --n-list 5000,19000
run aiohttp-raw A --n-list 5000,19000
run nchan A --n-list 5000,19000
for sys in herald aiohttp-raw nchan; do run "$sys" B --rates 5,10,15,20 --duration 6; done
for sys in herald aiohttp-raw nchan; do run "$sys" C --rates 5,10,15 --duration 6; done
for sys in herald aiohttp-raw nchan; do run "$sys" D --rates 2000,5000,8000,12500,15000 --duration 6; done
"$BENCH_HOME/venv/bin/python" "$BENCH/harness/summarize.py" --tag "$TAG"
