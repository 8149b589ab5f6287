#!/usr/bin/env bash
# A one-machine Herald cluster for ../shared/bench: redis-server, one router and one node on
# $HERALD_PORT (default 18084), all in the foreground process group so the harness can stop them.
# Usage: HERALD_CMD="exec $PWD/loadtest/bench/cluster.sh" ../shared/bench/run.sh herald D
set -euo pipefail
PORT="${HERALD_PORT:-18084}"
RPORT="${HERALD_BENCH_REDIS_PORT:-16391}"
DIR="$(mktemp -d)"
# On exit, stop the children and wait for them: a node still draining must not keep the port
# from the next run (the harness SIGKILLs the whole group if this takes more than 10 s).
trap 'kill $(jobs -p) 2>/dev/null; wait; rm -rf "$DIR"' EXIT
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >"$DIR/redis.log" 2>&1 &
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
export HERALD_REDIS="redis://127.0.0.1:$RPORT/0" HERALD_LOG_LEVEL="${HERALD_LOG_LEVEL:-warning}"
export HERALD_JWT_SECRET="${HERALD_JWT_SECRET:-bench-secret}" HERALD_API_KEY="${HERALD_API_KEY:-bench-key}"
herald router --host 127.0.0.1 --port $((PORT + 1)) &
herald node --host 127.0.0.1 --port "$PORT" --drain-window 1 &
if [ -n "${HERALD_BENCH_STATS:-}" ]; then  # keep the latest INFO commandstats/stats for the notes
  ( while sleep 1; do redis-cli -p "$RPORT" info commandstats > "$HERALD_BENCH_STATS.tmp" 2>/dev/null &&
      redis-cli -p "$RPORT" info stats >> "$HERALD_BENCH_STATS.tmp" && mv "$HERALD_BENCH_STATS.tmp" "$HERALD_BENCH_STATS"; done ) &
  STATS=$!
fi
wait -n $(jobs -p | grep -v "^${STATS:-none}$")
