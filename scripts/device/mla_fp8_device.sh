#!/usr/bin/env bash
# Issue 8, FP8 KV on fp16 MMAs (memory-bound MLA kernel, 16 heads): one device call on the binaries
# scripts/device/mla_mem_prebuild.sh built on the dev machine (BIN, default mla16bin): the MLA CUDA tests,
# instruction counts of the split kernel (cuobjdump, if present), the 16-head bench (bf16 + FP8) at
# batch 8/32/64 x 16K/64K/128K, and batch 1 x 4K latency against the launch floor. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
BIN=${BIN:-mla16bin}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv,noheader
t0=$SECONDS
timeout 150 "$BIN/test_mla" > "$OUT/tests.log" 2>&1; echo "tests rc=$? ($((SECONDS - t0)) s)"
grep -E "^\[  (PASSED|FAILED)|Failure|FAILED" "$OUT/tests.log" | head -20
grep -A1 "q_mag 65536\|row_exp -24\|q_mag 0.0000" "$OUT/tests.log" | grep rel_l2 | head -12
"$BIN/bench_mla" --heads 16 --batches 8 32 64 --contexts 16384 65536 131072 --skip-1m \
  --json "$OUT/bench_fp8.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$? ($((SECONDS - t0)) s)"; cat "$OUT/bench.log"
"$BIN/bench_mla" --heads 16 --batches 1 --contexts 4096 --skip-1m --json "$OUT/bench_b1.json" \
  > "$OUT/bench_b1.log" 2>&1
echo "bench b1 rc=$?"; cat "$OUT/bench_b1.log"
if command -v cuobjdump > /dev/null; then
  cuobjdump -sass "$BIN/bench_mla" > "$OUT/sass.txt" 2>/dev/null
  for v in 0 1; do
    awk -v k="mla_mem_kernelILb$v" '/Function :/{p = index($0, k) > 0} p' "$OUT/sass.txt" > "$OUT/k$v.sass"
    echo "kernel fp8=$v: instr $(grep -cE '^ +/\*[0-9a-f]{4}\*/' "$OUT/k$v.sass") HMMA $(grep -c HMMA "$OUT/k$v.sass") F2FP $(grep -c F2FP "$OUT/k$v.sass") PRMT $(grep -c PRMT "$OUT/k$v.sass")"
  done
  grep -o "F2FP[.A-Z0-9_]*" "$OUT/k1.sass" | sort | uniq -c
  rm -f "$OUT/sass.txt"
fi
echo "total $((SECONDS - t0)) s"
