#!/usr/bin/env bash
# The sm90 helper's closing device call (session 5), on a carried copy of the branch with binaries
# built on the dev machine: tbin/ (helix_cuda_tests, test_backend_ops from the cmake build of this
# tree; their HELIX_SOURCE_DIR, /work/wt/sm90, is linked to this copy) and sm90bin/ (bench_mla =
# bench_mla_decode_bf16 of this tree, bench_mla_base = of main before this work, both by
# scripts/device/sm90_prebuild.sh). Runs the MLA CUDA tests and test_backend_ops, the bf16 GEMM rate
# (bench/mla_torch_baseline.py --quick), then both benches at 128 heads, alternating.
#   OUT=dir bash scripts/device/sm90_s5_final.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/sb /work/wt
ln -sfn "$PWD" /work/wt/sm90
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in tbin/*.gz sm90bin/*.gz; do gunzip -c "$f" > /tmp/sb/$(basename "$f" .gz); chmod +x /tmp/sb/$(basename "$f" .gz); done
ldd /tmp/sb/helix_cuda_tests /tmp/sb/test_backend_ops | grep "not found"
timeout 300 /tmp/sb/helix_cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
echo "helix_cuda_tests *Mla* rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]" "$OUT/cuda_tests_mla.log"
timeout 300 /tmp/sb/test_backend_ops > "$OUT/backend_ops.log" 2>&1
echo "test_backend_ops rc=$?"; tail -3 "$OUT/backend_ops.log"
timeout 200 python3 bench/mla_torch_baseline.py --heads 128 --quick --json /tmp/torch.json > /tmp/torch.log 2>&1
G=$(python3 -c "import json;print(json.load(open('/tmp/torch.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
echo "bf16 GEMM $G TFLOP/s"
for n in bench_mla_base bench_mla; do
  timeout 200 /tmp/sb/$n --heads 128 --batches 8 32 64 --contexts 16384 65536 131072 --gemm-tflops "$G" \
    --json "$OUT/$n.json" > "$OUT/$n.log" 2>&1
  echo "== $n rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ |floor" "$OUT/$n.log"
done
for n in bench_mla_base bench_mla; do  # FP8 through the sm90 kernel at every batch; 16K again
  timeout 100 /tmp/sb/$n --heads 128 --batches 8 32 64 --contexts 16384 65536 --skip-1m --kernel sm90 \
    --gemm-tflops "$G" > "$OUT/${n}_sm90.log" 2>&1
  echo "== $n --kernel sm90 rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ " "$OUT/${n}_sm90.log"
done
