#!/usr/bin/env bash
# Session 6: builds bench_mla_decode_bf16 and times a few shapes both ways (queued headline and
# isolated) at 16 and 128 heads.   OUT=dir bash scripts/device/s6_bench_probe.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; B=${1:-/tmp/b-probe}; mkdir -p "$OUT"
. scripts/devdeps_env.sh
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_BENCH=ON -DHELIX_SANITIZE_TESTS=OFF > "$OUT/cmake.log" 2>&1 || { tail -20 "$OUT/cmake.log"; exit 1; }
ninja -C "$B" -j16 bench_mla_decode_bf16 > "$OUT/build.log" 2>&1 || { grep -m20 -A8 error "$OUT/build.log"; exit 1; }
echo "built in $SECONDS s"
"$B/bench/bench_mla_decode_bf16" --heads ${HEADS:-16 128} --batches ${BATCHES:-1 8 32} --contexts ${CONTEXTS:-4096 16384 65536} --skip-1m --json "$OUT/probe.json" 2>&1 | tee "$OUT/probe.log"
