#!/usr/bin/env bash
# Decode step time p50/p99 with online EPLB against the static placement, on the skewed fixture
# (router bias favours experts 0-2), ep 4 on CPU threads, 4 requests decoded together.
# usage: bench/bench_eplb_online.sh [BUILD_DIR] [NEW_TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
N=${2:-200}
M=tests/fixtures/fp32_skewed
P=(--tokens 5,6,7,8,9,10,11,12 --tokens 40,41,42 --tokens 100,7,99,3,250,17 --tokens 77)
run() {  # name, extra flags...
  local name=$1
  shift
  "$B/helix" generate --model $M "${P[@]}" --max-new-tokens "$N" --ignore-eos --cp 4 --ep 4 \
    --quiet --stats-json "/tmp/eplb_$name.json" "$@" >/dev/null
  python3 - "$name" "/tmp/eplb_$name.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[2]))
t = j["decode_step_ms"]
e = j.get("eplb", {})
layers = e.get("layers", [])
final = sum(l["final_max_over_mean"] for l in layers) / max(1, len(layers))
ups = sum(l["updates_applied"] for l in layers)
moved = sum(l["weight_bytes_moved"] for l in layers)
print(f"| {sys.argv[1]} | {t['p50']:.3f} | {t['p99']:.3f} | {final:.3f} | {ups} | {moved} | {e.get('late_steps', 0)} |")
PY
}
echo "| placement | step p50 ms | step p99 ms | final max/mean (mean over MoE layers) | layer updates | weight bytes moved | late steps |"
echo "|---|---|---|---|---|---|---|"
run static
run online_every8 --eplb-slots 24 --eplb-interval 8
run online_every1 --eplb-slots 24 --eplb-interval 1
