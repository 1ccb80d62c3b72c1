#!/usr/bin/env bash
# Session 7 (lead): several query tokens per sequence (MlaPlanDesc::q_len). Builds the CUDA tests
# and the MLA bench, runs the MLA tests, then times q_len 1, 2 and 3 at 16 and 128 heads.
#   OUT=dir bash scripts/device/s7_lead_qlen.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; B=${1:-/tmp/b-lead}; mkdir -p "$OUT"
. scripts/devdeps_env.sh
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_BENCH=ON -DHELIX_SANITIZE_TESTS=OFF > "$OUT/cmake.log" 2>&1 || { tail -20 "$OUT/cmake.log"; exit 1; }
ninja -C "$B" -j16 helix_cuda_tests bench_mla_decode_bf16 > "$OUT/build.log" 2>&1 || { grep -m20 -A8 error "$OUT/build.log"; exit 1; }
echo "built in $SECONDS s"
"$B/tests/helix_cuda_tests" --gtest_filter="${TESTS:-*MlaDecodeBf16Cuda*}" > "$OUT/tests.log" 2>&1
echo "tests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED|Failure" "$OUT/tests.log" | head -20
grep -A1 "q_len [2-9]" "$OUT/tests.log" | grep rel_l2 | sort -k3 -g | tail -3
for q in ${QLENS:-1 2 3}; do
  echo "== q_len $q"
  "$B/bench/bench_mla_decode_bf16" --q-len $q --heads ${HEADS:-16 128} --batches ${BATCHES:-8 32} --contexts ${CONTEXTS:-16384 65536} --skip-1m --iters 20 --json "$OUT/q$q.json" 2>&1 | grep -E "^ *(16|128) " 
done
