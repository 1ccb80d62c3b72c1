#!/usr/bin/env bash
# The final device call for the memory-bound MLA kernel: MLA tests, PyTorch eager baseline at 16
# heads (also measures copy bandwidth and the GEMM rate), the 16-head bench with 1M contexts, then
# 32 heads and the previous kernel (--kernel mma.sync) at a few shapes. Results under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
BIN=${BIN:-mla16bin}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
timeout 200 "$BIN/test_mla" > "$OUT/tests.log" 2>&1; echo "tests rc=$?"
grep -E "^\[  (PASSED|FAILED)|Failure" "$OUT/tests.log" | head
python3 bench/mla_torch_baseline.py --heads 16 --json "$OUT/mla_torch_baseline.json" > "$OUT/torch.log" 2>&1
echo "torch rc=$?"; head -1 "$OUT/torch.log"
GEMM=$(python3 -c "import json;print(json.load(open('$OUT/mla_torch_baseline.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
"$BIN/bench_mla" --heads 16 --gemm-tflops "$GEMM" --json "$OUT/bench_mla_decode_bf16.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; cat "$OUT/bench.log"
echo "== 32 heads"
"$BIN/bench_mla" --heads 32 --batches 8 32 --contexts 16384 131072 --skip-1m 2>&1 | grep -E "^ +32"
echo "== previous kernel (mla_bf16, --kernel mma.sync) at 16 heads"
"$BIN/bench_mla" --heads 16 --kernel mma.sync --batches 8 32 --contexts 16384 131072 --skip-1m 2>&1 | grep -E "^ +16"
