#!/usr/bin/env bash
# Session 7 (h128) closing device call: the bench before/after (s7_h128_run.sh over the carried
# binaries), then this tree's helix_cuda_tests (*Mla*) and test_backend_ops built here with cmake
# (-Werror) and run. Carry .dev/h128 and .devdeps.
#   OUT=dir BINS="..." [ROUNDS=3] [ARGS=...] bash scripts/device/s7_h128_final.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
bash scripts/device/s7_h128_run.sh
mv "$OUT/logs.tgz" "$OUT/bench_logs.tgz"
[ -d .devdeps ] || ln -sfn ../../.devdeps .devdeps
. scripts/devdeps_env.sh
B=/tmp/b-h128
(cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_WERROR=ON -DHELIX_BENCH=OFF \
  -DHELIX_SANITIZE_TESTS=OFF -DHELIX_SERVER=OFF && ninja -C $B -j16 helix_cuda_tests \
  test_backend_ops) > "$OUT/build.log" 2>&1
echo "build rc=$? (${SECONDS}s)"
grep -m10 -B2 -A8 "error" "$OUT/build.log"
timeout 300 $B/tests/helix_cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
echo "helix_cuda_tests *Mla* rc=$? (${SECONDS}s)"
grep -E "^\[  PASSED|^\[  FAILED|^\[==========\]" "$OUT/cuda_tests_mla.log"
grep -E -A6 "Failure" "$OUT/cuda_tests_mla.log" | head -30
timeout 120 $B/tests/test_backend_ops > "$OUT/backend_ops.log" 2>&1
echo "test_backend_ops rc=$? (${SECONDS}s)"
grep -E "^\[  PASSED|^\[  FAILED|^\[==========\]" "$OUT/backend_ops.log"
gzip -f "$OUT/build.log"
echo "total ${SECONDS}s"
