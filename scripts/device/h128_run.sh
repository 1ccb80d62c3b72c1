#!/usr/bin/env bash
# Session 6 (h128) device call: the sm90 MLA kernel's bf16 partition (kSeqCost) and per-sequence
# combine. Binaries built on the dev machine by h128_prebuild.sh, carried gzipped in hbin/:
# bench_mla_base (main 811f8c2), bench_mla (this branch), bench_mla_<variant> (this branch, other
# -D knobs of mla_decode_sm90.cu), bench_mla_fuse (s5-fuse 74e0eb2 merged with 811f8c2).
# FULL=1: also builds helix_cuda_tests and test_backend_ops of this tree with cmake (in the
# background, niced, while the benches run) and runs them (*Mla* and all backend ops).
# Logs: one tarball, $OUT/logs.tgz.
#   OUT=dir BINS="bench_mla_base bench_mla ..." [FULL=1] bash scripts/device/h128_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
FINAL_OUT=$OUT
OUT=/tmp/hlogs  # every log here, then one tarball in $OUT (few files come back)
mkdir -p "$FINAL_OUT" "$OUT" /tmp/hb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in hbin/*.gz; do
  n=$(basename "$f" .gz)
  gunzip -c "$f" > "/tmp/hb/$n"
  chmod +x "/tmp/hb/$n"
done
ldd /tmp/hb/* 2> /dev/null | grep "not found"
BP=""
if [ -n "${FULL:-}" ]; then
  [ -d .devdeps ] || ln -sfn ../../.devdeps .devdeps
  . scripts/devdeps_env.sh
  (cmake -S . -B /tmp/b-h128 -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_WERROR=ON -DHELIX_BENCH=OFF \
    -DHELIX_SANITIZE_TESTS=OFF -DHELIX_SERVER=OFF && nice -n 19 ninja -C /tmp/b-h128 -j10 \
    helix_cuda_tests test_backend_ops) > "$OUT/build.log" 2>&1 &
  BP=$!
fi
ARGS=${ARGS:---heads 128 --batches 8 32 64 --contexts 16384 65536 131072 --skip-1m}
for round in $(seq ${ROUNDS:-2}); do
  for n in ${BINS:-bench_mla_base bench_mla}; do
    timeout 90 "/tmp/hb/$n" $ARGS --json "$OUT/${n}_$round.json" > "$OUT/${n}_$round.log" 2>&1
    echo "== $n round $round rc=$? (${SECONDS}s)"
    grep -E " bf16 |NON-FINITE" "$OUT/${n}_$round.log" | awk '{print $1, $2, $3, $5, $6, $12}'
  done
done
for n in ${EXTRA_BINS:-}; do  # EXTRA_ARGS (e.g. FP8 through the sm90 kernel), one round
  timeout 90 "/tmp/hb/$n" $EXTRA_ARGS > "$OUT/${n}_extra.log" 2>&1
  echo "== $n extra rc=$?"
  grep -E "^ +[0-9]+ +[0-9]+ " "$OUT/${n}_extra.log" | awk '{print $1, $2, $3, $4, $5, $6, $12}'
done
for n in ${BINS1:-bench_mla_base bench_mla}; do  # batch 1
  timeout 60 "/tmp/hb/$n" --heads 128 --batches 1 --contexts 4096 16384 --skip-1m \
    > "$OUT/${n}_b1.log" 2>&1
  echo "== $n batch 1 rc=$?"
  grep -E " bf16 |NON-FINITE" "$OUT/${n}_b1.log" | awk '{print $1, $2, $3, $5, $6, $12}'
done
if [ -n "$BP" ]; then
  wait "$BP"
  echo "build rc=$? (${SECONDS}s)"
  grep -m10 -B2 -A8 "error" "$OUT/build.log"
  timeout 240 /tmp/b-h128/tests/helix_cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
  echo "helix_cuda_tests *Mla* rc=$? (${SECONDS}s)"
  grep -E "^\[  PASSED|^\[  FAILED|^\[==========\]" "$OUT/cuda_tests_mla.log"
  grep -E -A6 "Failure" "$OUT/cuda_tests_mla.log" | head -30
  timeout 120 /tmp/b-h128/tests/test_backend_ops > "$OUT/backend_ops.log" 2>&1
  echo "test_backend_ops rc=$? (${SECONDS}s)"
  grep -E "^\[  PASSED|^\[  FAILED|^\[==========\]" "$OUT/backend_ops.log"
elif [ -x /tmp/hb/test_mla ]; then
  timeout 240 /tmp/hb/test_mla --gtest_filter="${TEST_FILTER:-*}" > "$OUT/test_mla.log" 2>&1
  echo "test_mla rc=$? (${SECONDS}s)"
  grep -E "^\[  PASSED|^\[  FAILED|^\[==========\]" "$OUT/test_mla.log"
  grep -E -A6 "Failure" "$OUT/test_mla.log" | head -30
fi
echo "total ${SECONDS}s"
tar czf "$FINAL_OUT/logs.tgz" -C "$OUT" .
