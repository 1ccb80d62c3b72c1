#!/usr/bin/env bash
# Session 4's final device call for the memory-bound MLA kernel, on the binaries
# scripts/device/mla_mem_prebuild.sh built (gzipped: mla16bin/{test_mla,bench_mla}.gz): the MLA CUDA
# tests, PyTorch eager at 16 heads (also the GEMM rate), the 16-head bench (default shapes: batch
# 1/8/32/64 x 1K..128K, 1M at batch 1 and 8; batch-1 latency vs the launch floor, stream and graph),
# batch 32 x 1M, and 32 heads at a few shapes. Logs and JSON under $OUT; the tables on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
V=/tmp/mla-final; mkdir -p $V
for n in test_mla bench_mla; do gunzip -c mla16bin/$n.gz > $V/$n; chmod +x $V/$n; done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
t0=$SECONDS
timeout 200 $V/test_mla > "$OUT/tests.log" 2>&1; echo "tests rc=$? ($((SECONDS - t0)) s)"
grep -E "^\[  (PASSED|FAILED)|Failure" "$OUT/tests.log" | head
timeout 240 python3 bench/mla_torch_baseline.py --heads 16 --json "$OUT/mla_torch_baseline_16heads.json" \
  > "$OUT/torch.log" 2>&1
echo "torch rc=$? ($((SECONDS - t0)) s)"; head -3 "$OUT/torch.log"
GEMM=$(python3 -c "import json;print(json.load(open('$OUT/mla_torch_baseline_16heads.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
timeout 200 $V/bench_mla --heads 16 --gemm-tflops "$GEMM" --json "$OUT/bench_mla_decode_mem_s4.json" \
  > "$OUT/bench.log" 2>&1
echo "bench rc=$? ($((SECONDS - t0)) s)"; cat "$OUT/bench.log"
timeout 90 $V/bench_mla --heads 16 --batches 32 --contexts 1048576 --skip-1m \
  --json "$OUT/bench_mla_decode_mem_s4_32x1m.json" > "$OUT/bench_32x1m.log" 2>&1
echo "bench 32 x 1M rc=$? ($((SECONDS - t0)) s)"; grep -E "^ +16" "$OUT/bench_32x1m.log"
echo "== 32 heads"
timeout 60 $V/bench_mla --heads 32 --batches 8 32 --contexts 16384 131072 --skip-1m 2>&1 | grep -E "^ +32"
echo "total $((SECONDS - t0)) s"
