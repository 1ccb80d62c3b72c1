#!/usr/bin/env bash
# Runs a build's CUDA test binaries (helix_cuda_tests, test_backend_ops): a log each under $OUT, a
# summary line each on stdout with the failed tests; exits 1 when any failed. Used by the device
# scripts (device_verify.sh, device/dedupe_device.sh).
#   OUT=dir bash scripts/cuda_tests.sh build-dir
set -uo pipefail
B=${1:?build dir}
OUT=${OUT:-./out}
mkdir -p "$OUT"
status=0
for t in helix_cuda_tests test_backend_ops; do
  timeout 300 "$B/tests/$t" --gtest_brief=1 > "$OUT/$t.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  echo "$t: rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/$t.log" | tr '\n' ' ')"
  grep -E "^\[  FAILED" "$OUT/$t.log" | head -20
done
exit $status
