#!/usr/bin/env bash
# On the GPU machine, in one call: build and run the backend-parity test and the decode GEMM
# bench, make a tiny DeepSeek-V3 slice (bf16 + FP8), load it with helix (CPU) and time HF
# transformers decode on it. Logs in $OUT.  Usage: [QUICK=1] OUT=dir bash scripts/device/gpu_ops_check.sh [build]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-gpu-ops}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_MPI=OFF > "$OUT/cmake.log" 2>&1
TARGETS="test_backend_ops bench_gemm_cuda"
[ -z "${QUICK:-}" ] && TARGETS="$TARGETS helix"
ninja -C "$B" -j16 $TARGETS > "$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log"; exit 1; }
"$B/tests/test_backend_ops" > "$OUT/test_backend_ops.log" 2>&1
echo "test_backend_ops rc=$?" | tee -a "$OUT/summary.txt"
grep -E "^\[parity\]|FAILED|PASSED" "$OUT/test_backend_ops.log" | tail -80
timeout 120 "$B/bench/bench_gemm_cuda" --json "$OUT/bench_gemm_cuda.json" > "$OUT/bench_gemm_cuda.log" 2>&1
echo "bench_gemm_cuda rc=$?" | tee -a "$OUT/summary.txt"
cat "$OUT/bench_gemm_cuda.log"
[ -n "${QUICK:-}" ] && exit 0  # QUICK=1: parity test and GEMM bench only
T=/tmp/gpu-ops-tiny
rm -rf "$T"
python3 tools/make_slice.py --out "$T" --tiny > "$OUT/make_slice_tiny.log" 2>&1
echo "make_slice --tiny rc=$?" | tee -a "$OUT/summary.txt"
tail -3 "$OUT/make_slice_tiny.log"
for f in bf16 fp8; do
  "$B/helix" generate --model "$T/$f" --tokens 5,17,300,42 --max-new-tokens 12 --ignore-eos \
    > "$OUT/helix_tiny_$f.txt" 2> "$OUT/helix_tiny_$f.err"
  echo "helix generate tiny $f rc=$? ids: $(head -c 300 "$OUT/helix_tiny_$f.txt")" | tee -a "$OUT/summary.txt"
done
timeout 300 python3 bench/bench_hf_decode.py --model "$T/bf16" --batches 1,4 --contexts 64,512 \
  --steps 3 --json "$OUT/bench_hf_tiny.json" > "$OUT/bench_hf_tiny.log" 2>&1
echo "bench_hf_decode tiny rc=$?" | tee -a "$OUT/summary.txt"
tail -8 "$OUT/bench_hf_tiny.log"
