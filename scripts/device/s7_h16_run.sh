#!/usr/bin/env bash
# Session 7 (h16): one device call for the memory-bound MLA kernel. Carried in bin-h16/ (made on
# the dev machine): bench_<variant>.gz (scripts/device/mla_mem_s7_h16_build.sh, static),
# cuda_tests.gz / backend_ops.gz (this tree's helix_cuda_tests / test_backend_ops, dynamic) and
# libs/*.gz (their non-CUDA libraries, used only if the device lacks them).
#   TESTS=1: helix_cuda_tests --gtest_filter='*Mla*' and test_backend_ops;
#   PAIRS="a b": alternating ROUNDS times at SHAPE (default the brief's bar shapes);
#   FULLV="a b": alternating FROUNDS times at batch 8/32/64 x 16K/64K/128K;
#   ONCE="c d": once each at SHAPE1 (default batch 8 and 32 x 16K); B1="a b": batch 1 x 64K.
# Logs under $OUT; the key lines on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
V=/tmp/mla-mem-h16; mkdir -p $V/libs
for f in bin-h16/*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > $V/$n; chmod +x $V/$n; done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
# test fixtures: this tree, or (a copy carrying only bin-h16 and this script) the repo around it
ROOT=$PWD; [ -d tests ] || ROOT=$(cd ../.. && pwd)
mkdir -p /work/wt 2> /dev/null && ln -sfn "$ROOT" /work/wt/h16 2> /dev/null
t0=$SECONDS
if [ "${TESTS:-0}" = 1 ]; then
  if ldd $V/cuda_tests $V/backend_ops | grep -q "not found"; then
    for f in bin-h16/libs/*.gz; do gunzip -c "$f" > $V/libs/$(basename "$f" .gz); done
    export LD_LIBRARY_PATH=$V/libs:${LD_LIBRARY_PATH:-}
    echo "carried libraries used"; ldd $V/cuda_tests | grep "not found"
  fi
  timeout 300 $V/cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
  echo "helix_cuda_tests *Mla* rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED) |^\[==========\] [0-9]+ tests|FAILED" "$OUT/cuda_tests_mla.log" | tail -8
  grep -oE "rel_l2 out [0-9.e+-]+" "$OUT/cuda_tests_mla.log" | awk '{if ($3 + 0 > m) m = $3 + 0} END {print "  max rel_l2 out " m}'
  grep -A1 "late-write" "$OUT/cuda_tests_mla.log" | grep -oE "rel_l2 out [0-9.e+-]+ lse [0-9.e+-]+" | sed 's/^/  late-write /'
  timeout 300 $V/backend_ops > "$OUT/backend_ops.log" 2>&1
  echo "test_backend_ops rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED) |^\[==========\] [0-9]+ tests" "$OUT/backend_ops.log" | tail -3
fi
show() {  # batch context kv us of_copy fp8/bf16
  grep -E "^ +16 " "$1" | awk '{printf "  %3s x %7s %4s %9s us of_copy %s fp8/bf16 %s\n", $2, $3, $4, $5, $8, $11}'
}
SHAPE=${SHAPE:---batches 8 32 --contexts 16384 65536}
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in ${PAIRS:-}; do
    # shellcheck disable=SC2086
    timeout 120 $V/bench_$v --heads 16 $SHAPE --skip-1m > "$OUT/p_${v}_$r.log" 2>&1
    echo "== $v round $r rc=$? ($((SECONDS - t0)) s)"; show "$OUT/p_${v}_$r.log"
  done
done
for r in $(seq 1 "${FROUNDS:-0}"); do
  for v in ${FULLV:-}; do
    timeout 150 $V/bench_$v --heads 16 --batches 8 32 64 --contexts 16384 65536 131072 --skip-1m \
      > "$OUT/f_${v}_$r.log" 2>&1
    echo "== full $v round $r rc=$? ($((SECONDS - t0)) s)"; show "$OUT/f_${v}_$r.log"
  done
done
for v in ${ONCE:-}; do
  # shellcheck disable=SC2086
  timeout 60 $V/bench_$v --heads 16 ${SHAPE1:---batches 8 32 --contexts 16384} --skip-1m > "$OUT/o_$v.log" 2>&1
  echo "== $v rc=$? ($((SECONDS - t0)) s)"; show "$OUT/o_$v.log"
done
for v in ${B1:-}; do
  timeout 60 $V/bench_$v --heads 16 --batches 1 --contexts 65536 --skip-1m > "$OUT/b1_$v.log" 2>&1
  echo "== $v batch 1 rc=$? ($((SECONDS - t0)) s)"; show "$OUT/b1_$v.log"
done
cat "$OUT"/p_*.log "$OUT"/f_*.log "$OUT"/o_*.log "$OUT"/b1_*.log > "$OUT/bench.log" 2> /dev/null
rm -f "$OUT"/p_*.log "$OUT"/f_*.log "$OUT"/o_*.log "$OUT"/b1_*.log
echo "total $((SECONDS - t0)) s"
