#!/usr/bin/env bash
# The GPU check, in one call: Release build in build-gpu, the CUDA tests (CUDA ops against their
# CPU references), then bench_mla_decode_cuda. Logs to $OUT/gpu_check.log, JSON to
# $OUT/bench_mla_decode_cuda.json.
#
#   OUT=/some/dir bash scripts/device/gpu_check.sh     # OUT defaults to ./out; JOBS to 16
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
JOBS=${JOBS:-16}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1

status=0
step() {  # step NAME CMD...: runs CMD, records failure, keeps going
  local name=$1
  shift
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@"; then
    echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    echo "=== $name: FAILED rc=$? ($((SECONDS - t0)) s)"
    status=1
  fi
}

echo "=== gpu_check $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
nvcc --version | tail -1

export PATH=/usr/local/cuda/bin:$PATH
step configure cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_BENCH=ON \
  -DHELIX_TESTS=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc
step build ninja -C build-gpu -j"$JOBS" helix_cuda_tests bench_mla_decode_cuda helix_tests
if [[ -x build-gpu/tests/helix_cuda_tests ]]; then
  step cuda_tests timeout 300 build-gpu/tests/helix_cuda_tests --gtest_brief=1
fi
if [[ -x build-gpu/bench/bench_mla_decode_cuda ]]; then
  step bench timeout 240 build-gpu/bench/bench_mla_decode_cuda --iters 20 \
    --json "$OUT/bench_mla_decode_cuda.json"
fi
echo "=== gpu_check: $([[ $status == 0 ]] && echo PASS || echo FAIL)"
exit $status
