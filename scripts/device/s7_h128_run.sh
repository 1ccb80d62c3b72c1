#!/usr/bin/env bash
# Session 7 (h128) device call: the sm90 kernel's whole-CTA pieces (mla_combine::whole_range) against
# main. Binaries built on the dev machine by h128_prebuild.sh, carried gzipped in hbin/:
# bench_mla_base (main 2841afc), bench_mla (this branch), bench_mla_<variant> (other -D knobs of
# mla_decode_sm90.cu), test_mla (this branch's test_mla_decode_bf16). Rounds alternate the order.
#   OUT=dir BINS="bench_mla_base bench_mla ..." [ROUNDS=2] [ARGS=...] [TEST_FILTER=...]
#   bash scripts/device/s7_h128_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
FINAL_OUT=$OUT
OUT=/tmp/hlogs
mkdir -p "$FINAL_OUT" "$OUT" /tmp/hb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in hbin/*.gz; do
  n=$(basename "$f" .gz)
  gunzip -c "$f" > "/tmp/hb/$n"
  chmod +x "/tmp/hb/$n"
done
ldd /tmp/hb/* 2> /dev/null | grep "not found"
ARGS=${ARGS:---heads 128 --batches 1 8 32 64 --contexts 16384 65536 --skip-1m}
BINS=${BINS:-bench_mla_base bench_mla}
for round in $(seq ${ROUNDS:-2}); do
  order=$BINS
  [ $((round % 2)) -eq 0 ] && order=$(echo $BINS | tr ' ' '\n' | tac | tr '\n' ' ')
  for n in $order; do
    timeout 120 "/tmp/hb/$n" $ARGS --json "$OUT/${n}_$round.json" > "$OUT/${n}_$round.log" 2>&1
    echo "== $n round $round rc=$? (${SECONDS}s)"
    grep -E "^ +[0-9]+ +[0-9]+ +[0-9]+ +(bf16|fp8)|NON-FINITE" "$OUT/${n}_$round.log" | awk '{printf "%s %sx%s %s %s %s | ", $1, $2, $3, $4, $5, $6} END {print ""}'
  done
done
for n in ${BINS1:-}; do  # batch 1 x 4K
  timeout 60 "/tmp/hb/$n" --heads 128 --batches 1 --contexts 4096 --skip-1m > "$OUT/${n}_b1.log" 2>&1
  echo "== $n batch 1 rc=$?"
  grep -E "bf16|latency" "$OUT/${n}_b1.log"
done
for n in ${STAMP_BINS:-}; do  # measurement builds (-DHELIX_SM90_STAMPS): one shape a process
  for shape in ${STAMP_SHAPES:-"8 16384" "1 16384"}; do
    set -- $shape
    timeout 60 "/tmp/hb/$n" --heads 128 --batches $1 --contexts $2 --skip-1m > "$OUT/${n}_st_$1_$2.log" 2>&1
    echo "== $n stamps $1 x $2 rc=$?"
    grep -E "^ +128 +$1 .*bf16|STAMP" "$OUT/${n}_st_$1_$2.log" | cut -c1-1500
  done
done
if [ -x /tmp/hb/test_mla ] && [ -n "${TEST_FILTER:-}" ]; then
  timeout 300 /tmp/hb/test_mla --gtest_filter="$TEST_FILTER" > "$OUT/test_mla.log" 2>&1
  echo "test_mla rc=$? (${SECONDS}s)"
  grep -E "^\[  PASSED|^\[  FAILED|^\[==========\]|^\[       OK" "$OUT/test_mla.log"
  grep -E -A6 "Failure" "$OUT/test_mla.log" | head -30
fi
echo "total ${SECONDS}s"
tar czf "$FINAL_OUT/logs.tgz" -C "$OUT" .
