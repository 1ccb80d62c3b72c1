#!/usr/bin/env bash
# Throughput and TTFT p50/p99 of `helix serve` against client concurrency (1..64 streaming
# clients). Writes bench/data/bench_serve.json; plot with tools/plot_bench.py.
# usage: bench/bench_serve.sh [HELIX_BIN] [MODEL_DIR] [extra serve flags...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
helix=${1:-$root/build/helix}
model=${2:-$root/models/tiny}
shift 2 || true
flags=(--max-running 64 --max-waiting 256 "$@")
log=$(mktemp)
"$helix" serve --model "$model" --port 0 "${flags[@]}" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^helix serve: listening on http:\/\/[^:]*:\([0-9]*\)$/\1/p' "$log")
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "$port" ] || { cat "$log"; exit 1; }
PORT=$port MODEL=$(basename "$model") OUT=${OUT:-$root/bench/data/bench_serve.json} \
  FLAGS="${flags[*]}" node "$root/bench/bench_serve.mjs"
