#!/usr/bin/env bash
# Session 6 (h16): one device call for the memory-bound MLA kernel. Unpacks the static binaries
# scripts/device/mla_mem_s6_build.sh made (build-bin/*.gz, carried), then
# - TESTS=1: the MLA kernel tests (test_mla: this tree);
# - FULL="a b": the variants at the issue's 16-head shapes (batch 8/32/64 x 16K/64K/128K) and
#   batch 1 x 4K/16K, alternating, ROUNDS times;
# - VARS="a b ...": the variants at SHAPE (default batch 8 and 32 x 16K), alternating, ROUNDS;
# - STAMPS="st0 fust": the per-CTA stamps variants at 8 x 16K, summarised.
# Logs under $OUT; the key lines on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
V=/tmp/mla-mem-h16; mkdir -p $V
for f in build-bin/*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > $V/$n; chmod +x $V/$n; done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
t0=$SECONDS
show() {  # heads batch context kv us of_copy fp8/bf16 iso_us
  grep -E "^ +16 " "$1" | awk '{printf "  %3s x %7s %4s %9s us of_copy %s iso %s\n", $2, $3, $4, $5, $8, $12}'
  grep -E "batch-1 .* latency" "$1" | sed 's/^ */  /'
}
if [ "${TESTS:-0}" = 1 ]; then
  timeout 300 $V/test_mla > "$OUT/tests.log" 2>&1; echo "tests rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED)|Failure|FAILED" "$OUT/tests.log" | head -30
  grep -oE "rel_l2 out [0-9.e+-]+" "$OUT/tests.log" | awk '{if ($3 + 0 > m) m = $3 + 0} END {print "  max rel_l2 out " m}'
fi
for r in $(seq 1 "${ROUNDS:-1}"); do
  for v in ${FULL:-}; do
    timeout 150 $V/bench_$v --heads 16 --batches 8 32 64 --contexts 16384 65536 131072 --skip-1m \
      --iters ${ITERS:-10} > "$OUT/f_${v}_$r.log" 2>&1
    echo "== full $v round $r rc=$? ($((SECONDS - t0)) s)"; show "$OUT/f_${v}_$r.log"
    timeout 60 $V/bench_$v --heads 16 --batches 1 --contexts 4096 16384 --skip-1m \
      --iters ${ITERS:-10} > "$OUT/f1_${v}_$r.log" 2>&1
    echo "== batch 1 $v round $r rc=$?"; show "$OUT/f1_${v}_$r.log"
  done
  for v in ${VARS:-}; do
    timeout 60 $V/bench_$v --heads 16 ${SHAPE:---batches 8 32 --contexts 16384} --skip-1m \
      --iters ${ITERS:-10} > "$OUT/v_${v}_$r.log" 2>&1
    echo "== $v round $r rc=$? ($((SECONDS - t0)) s)"; show "$OUT/v_${v}_$r.log"
  done
done
for v in ${STAMPS:-}; do
  timeout 60 $V/bench_$v --heads 16 --batches 8 --contexts 16384 --skip-1m --iters 10 > "$OUT/st_$v.log" 2>&1
  echo "== stamps $v 8 x 16384 rc=$? ($((SECONDS - t0)) s)"; show "$OUT/st_$v.log"
  python3 scripts/device/mla_mem_s6_stamps.py "$OUT/st_$v.log"
done
cat "$OUT"/f_*.log "$OUT"/f1_*.log > "$OUT/bench_full.log" 2>/dev/null
cat "$OUT"/v_*.log > "$OUT/bench_vars.log" 2>/dev/null
cat "$OUT"/st_*.log > "$OUT/stamps.log" 2>/dev/null
rm -f "$OUT"/f_*.log "$OUT"/f1_*.log "$OUT"/v_*.log "$OUT"/st_*.log
echo "total $((SECONDS - t0)) s"
