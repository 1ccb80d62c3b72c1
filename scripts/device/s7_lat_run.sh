#!/usr/bin/env bash
# Session 7 (lat): the one-cluster batch-1 kernel on the device, binaries prebuilt on the dev
# machine by s7_lat_prebuild.sh into devbin/{base,new} (base = main 2841afc). Tests, the launch
# probe, the cluster kernel's stamps, then the bench: base and new alternating, two rounds.
#   OUT=dir [TESTS=gtest-filter] [PROBE=1] [TRACE=1] [BENCH=1] [FORCED=1] bash scripts/device/s7_lat_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
D=devbin
# The binaries travel gzipped (the carry limit).
for f in $D/*/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done
chmod +x $D/*/*
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [ -n "${TESTS:-}" ]; then
  $D/new/test_mla --gtest_filter="$TESTS" > "$OUT/test.log" 2>&1; echo "test rc $?"
  grep -E "^\[  (PASSED|FAILED) |FAILED|tests ran" "$OUT/test.log" | head -20
  grep -o "rel_l2 out [0-9.e+-]*" "$OUT/test.log" | sort -k3 -g | tail -2
fi
if [ "${HELIXT:-0}" = 1 ]; then  # the cmake build's test_backend_ops (its shared libraries in devbin/libs)
  ldd --version | head -1
  LD_LIBRARY_PATH=$PWD/$D/libs $D/new/test_backend_ops > "$OUT/backend.log" 2>&1; echo "test_backend_ops rc $?"
  grep -E "^\[  (PASSED|FAILED) |^\[  FAILED" "$OUT/backend.log" | head; tail -3 "$OUT/backend.log"
fi
[ "${PROBE:-0}" = 1 ] && $D/new/launch_probe 2>&1 | tee "$OUT/probe.log"
if [ "${TRACE:-0}" = 1 ]; then
  : > "$OUT/trace.log"
  for v in ${TRACEV:-_}; do
    [ "$v" = _ ] && v=""
    [ -x $D/new/cluster_trace$v ] && { echo "-- cluster_trace$v"; $D/new/cluster_trace$v; } >> "$OUT/trace.log" 2>&1
  done
  cat "$OUT/trace.log"
fi
ARGS="--batches 1 --contexts ${CONTEXTS:-1024 4096 16384} --skip-1m --iters ${ITERS:-50}"
if [ "${BENCH:-1}" = 1 ]; then
  for r in 1 2; do
    for side in base new; do
      echo "== $side r$r"
      $D/$side/bench_mla --heads ${HEADS:-16 128} $ARGS --json "/tmp/$side-r$r.json" > "$OUT/$side-r$r.log" 2>&1
      grep -E "launch floor" "$OUT/$side-r$r.log"
      grep -A1 -E "^ +(16|128) +1 .* bf16 " "$OUT/$side-r$r.log" | grep -v "^--" | sed 's/; isolated.*//' 
    done
  done
fi
if [ -n "${TESTS:-}" ]; then  # again at the end (the tail of stdout is what comes back)
  echo "== tests: $TESTS"; grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|tests ran" "$OUT/test.log" | head
  grep -o "rel_l2 out [0-9.e+-]*" "$OUT/test.log" | sort -k3 -g | tail -1
  [ -f "$OUT/backend.log" ] && grep -E "^\[  (PASSED|FAILED) " "$OUT/backend.log" | sed 's/^/test_backend_ops /'
fi
if [ "${FORCED:-0}" = 1 ]; then
  for n in ${FORCED_CTAS:-16 32 64 128}; do
    echo "== new --kernel cluster --ctas $n"
    $D/new/bench_mla --heads ${FHEADS:-16} --kernel cluster --ctas $n $ARGS > "$OUT/forced.log" 2>&1
    grep -E "^ +(16|128) +1 .* bf16 " "$OUT/forced.log"
  done
fi
