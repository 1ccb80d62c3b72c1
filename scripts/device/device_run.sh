#!/usr/bin/env bash
# Everything worth running on the GPU machine in one call: the GPU check (CUDA ops vs CPU, CUDA
# decode bench), the whole ctest suite on that machine's Ubuntu, and the CPU benchmarks on its
# cores. Results land in $OUT (JSON + logs).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT="$OUT" bash scripts/device/gpu_check.sh
ninja -C build-gpu -j16 > "$OUT/build_all.log" 2>&1 || { tail -30 "$OUT/build_all.log"; }
(ctest --test-dir build-gpu -j8 --output-on-failure 2>&1 | tail -15) | tee "$OUT/ctest.log"
B=build-gpu/bench
{
  echo "== cpu: $(grep -m1 'model name' /proc/cpuinfo) x $(nproc)"
  $B/bench_attention_layer --contexts 1024 4096 16384 --iters 5 --json "$OUT/bench_attention_layer.json"
  $B/bench_helix_attention --contexts 4096 8192 16384 32768 --cp 1 2 4 --iters 7 --json "$OUT/bench_helix_attention.json"
  $B/bench_eplb_plan --json "$OUT/bench_eplb_plan.json" 2>&1 | tail -8
  for cp in 1 2 4; do
    build-gpu/helix generate --model models/tiny --tokens 17,93,4,211,58,120,7 --max-new-tokens 200 \
      --ignore-eos --cp $cp --quiet 2>/dev/null >/dev/null
    build-gpu/helix generate --model models/tiny --tokens 17,93,4,211,58,120,7 --max-new-tokens 200 \
      --ignore-eos --cp $cp 2>&1 >/dev/null | grep tokens/s | sed "s/^/tiny cp=$cp: /"
  done
} 2>&1 | tee "$OUT/cpu_bench.log"
