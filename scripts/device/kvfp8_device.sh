#!/usr/bin/env bash
# The FP8 KV cache's device call (--kv-cache-dtype fp8): a -Werror build of helix and the CUDA
# tests, the FP8 parity cases (CudaOps vs CpuOps kv_write bytes and mla_decode; the FP8 MLA
# kernel's own cases), the engine tests (pool capacity at one --gpu-memory-fraction, float32
# activations vs the CPU FP8 engine, graphs vs eager), every other backend parity case, and the
# embedded model's text and decode tokens/s with a bf16 vs an fp8 cache.
#   OUT=dir [QUICK=1] bash scripts/device/kvfp8_device.sh [build-dir]   (QUICK: tests only, no text/tokens/s)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-kvfp8}
mkdir -p "$OUT"
. scripts/devdeps_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_WERROR=ON -DHELIX_BENCH=OFF \
  -DHELIX_MPI=OFF -DHELIX_SANITIZE_TESTS=OFF > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
t0=$SECONDS
ninja -C "$B" -j16 helix helix_cuda_tests test_backend_ops >> "$OUT/build.log" 2>&1 ||
  { grep -m20 -B2 -A10 "error" "$OUT/build.log"; exit 1; }
echo "build: $((SECONDS - t0)) s"
timeout 120 "$B/tests/test_backend_ops" > "$OUT/parity.log" 2>&1
echo "test_backend_ops rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/parity.log" | tr '\n' ' ')"
grep -E "FAILED|fp8 pool" "$OUT/parity.log" | head -20
timeout 200 "$B/tests/helix_cuda_tests" \
  --gtest_filter='CudaKvFp8.*:CudaEngine.*:MlaDecodeBf16Cuda.Fp8Kv' > "$OUT/cuda_tests.log" 2>&1
echo "helix_cuda_tests (FP8 KV, engine, FP8 MLA) rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/cuda_tests.log" | tr '\n' ' ')"
grep -E "^\[  FAILED|Failure|\[cuda kv fp8\]|\[cuda\] --gpu" "$OUT/cuda_tests.log" | head -60
[ -n "${QUICK:-}" ] && exit 0
# The embedded model: text with a bf16 and an fp8 cache (bf16 activations, graphs), then decode
# tokens/s over 400 new tokens (one request), and the same in float32 activations.
for dk in "bfloat16 bfloat16" "bfloat16 fp8" "float32 float32" "float32 fp8"; do
  set -- $dk
  echo "models/tiny cuda dtype=$1 kv=$2: $("$B/helix" generate --model models/tiny --prompt "In the beginning" \
    --max-new-tokens 40 --device cuda --dtype $1 --kv-cache-dtype $2 2>"$OUT/tiny.err" | tr '\n' ' ') $(grep error "$OUT/tiny.err")"
done
for dt in bfloat16 float32; do
  for kv in $([ $dt = float32 ] && echo "float32 fp8" || echo "bfloat16 fp8"); do
    for rep in 1 2; do
      "$B/helix" generate --model models/tiny --prompt "In the beginning" --max-new-tokens 400 \
        --ignore-eos --device cuda --dtype $dt --kv-cache-dtype $kv > /dev/null 2> "$OUT/tps.err"
      echo "tokens/s dtype=$dt kv=$kv run $rep: $(grep -m1 'tokens/s' "$OUT/tps.err")"
    done
  done
done
