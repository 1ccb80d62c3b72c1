#!/usr/bin/env bash
# On the GPU machine, in one call: build helix + the CUDA model tests, run the HF fixtures on
# the GPU (float32 and bfloat16 modes) and a CLI smoke run. Logs in $OUT.
# Usage: OUT=dir bash scripts/device/gpu_model_check.sh [build-dir] [gtest-filter]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-gpu-model}
FILTER=${2:-'*CudaHfFixture*'}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_MPI=OFF -DHELIX_BENCH=OFF \
  > "$OUT/cmake.log" 2>&1
t0=$(date +%s)
ninja -C "$B" -j16 helix helix_cuda_tests > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
M=tests/fixtures/fp32_qnull
for dt in float32 bfloat16; do
  "$B/helix" generate --model $M --tokens 211,183,186,100,225 --tokens 241 --max-new-tokens 16 \
    --device cuda --dtype $dt > "$OUT/smoke_$dt.txt" 2> "$OUT/smoke_$dt.err"
  echo "smoke $dt rc=$? $(tr '\n' ' ' < "$OUT/smoke_$dt.txt") | $(tail -1 "$OUT/smoke_$dt.err")"
done
"$B/helix" generate --model $M --tokens 211,183,186,100,225 --tokens 241 --max-new-tokens 16 \
  --device cpu 2>/dev/null | tr '\n' ' '; echo " <- cpu"
timeout 400 "$B/tests/helix_cuda_tests" --gtest_filter="$FILTER" > "$OUT/cuda_tests.log" 2>&1
echo "helix_cuda_tests rc=$?"
grep -E "^\[cuda|FAILED|PASSED|Failure|error" "$OUT/cuda_tests.log" | head -150
