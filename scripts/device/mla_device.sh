#!/usr/bin/env bash
# One device call for the bf16 / FP8 MLA decode (issue 8): build the CUDA tests and the bench,
# run the MLA tests, the PyTorch eager baseline (also measures the GEMM rate and copy bandwidth)
# and the bench, logs and JSON under $OUT.   MODE=quick|full (default full)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
MODE=${MODE:-full}
B=${BUILD:-/tmp/b-mla}
mkdir -p "$OUT"
# Only results go to $OUT (the device returns a limited number of files); logs stay in $LOG.
LOG=${LOG:-/tmp/mla-logs}
mkdir -p "$LOG"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_MPI=OFF > "$LOG/cmake.log" 2>&1
ninja -C "$B" -j16 helix_cuda_tests bench_mla_decode_bf16 > "$LOG/build.log" 2>&1 || { tail -40 "$LOG/build.log"; exit 1; }
"$B/tests/helix_cuda_tests" --gtest_filter="${FILTER:-MlaDecodeBf16*}" > "$LOG/tests.log" 2>&1
echo "tests rc=$?"; grep -E "rel_l2|FAILED|PASSED|Failure|error" "$LOG/tests.log" | head -60
Q=""; [ "$MODE" = quick ] && Q="--quick"
GEMM=0
if [ "${TORCH:-1}" = 1 ]; then
  python3 bench/mla_torch_baseline.py --json "$OUT/mla_torch_baseline.json" $Q > "$OUT/torch.log" 2>&1
  GEMM=$(python3 -c "import json;print(json.load(open('$OUT/mla_torch_baseline.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
  head -1 "$OUT/torch.log"
fi
"$B/bench/bench_mla_decode_bf16" $Q --gemm-tflops "$GEMM" --json "$OUT/bench_mla_decode_bf16.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; cat "$OUT/bench.log"
if [ "${SYNC:-0}" = 1 ]; then  # both 64-head kernels on the quick shapes
  for k in mma.sync wgmma; do
    "$B/bench/bench_mla_decode_bf16" --quick --kernel $k --json "$LOG/bench_$k.json" > "$LOG/bench_$k.log" 2>&1
    echo "== $k for 64-head groups:"; grep -E "^ +128" "$LOG/bench_$k.log"
  done
fi
# The plot, where the device's python has matplotlib (else run tools/plot_bench.py here).
python3 tools/plot_bench.py "$OUT" 2>&1 | tail -2
