#!/usr/bin/env bash
# One device call for the memory-bound MLA kernel (session 5): unpacks the binaries that
# scripts/device/mla_mem_s5_build.sh made (build-bin/*.gz, carried), then
# - TESTS=1: the MLA kernel tests (test_mla, this tree);
# - each bench variant in VARS at SHAPE (16 heads), ROUNDS times alternating;
# - STAMPS: the stamps variants (e.g. st) at STAMP_SHAPES (default 8x16384), summarised per phase;
# - NCU=1: ncu durations of both kernels at 8 x 16K (v0).
# Logs under $OUT; the key lines on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
V=/tmp/mla-mem; mkdir -p $V
for f in build-bin/*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > $V/$n; chmod +x $V/$n; done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
t0=$SECONDS
if [ "${TESTS:-0}" = 1 ]; then
  timeout 300 $V/test_mla > "$OUT/tests.log" 2>&1; echo "tests rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED)|Failure|FAILED|max rel" "$OUT/tests.log" | head -30
fi
SHAPE=${SHAPE:---batches 8 32 64 --contexts 16384 65536 131072}
for r in $(seq 1 "${ROUNDS:-1}"); do
  for v in ${VARS:-v0}; do
    timeout 120 $V/bench_$v --heads 16 $SHAPE --skip-1m --iters ${ITERS:-10} > "$OUT/b_${v}_$r.log" 2>&1
    echo "== $v round $r rc=$? ($((SECONDS - t0)) s)"
    grep -E "^ +16 " "$OUT/b_${v}_$r.log" | awk '{printf "  %3s x %7s %4s %9s us of_copy %s %s\n", $2, $3, $4, $5, $8, $11}'
  done
done
cat "$OUT"/b_*.log > "$OUT/bench_all.log" 2>/dev/null; rm -f "$OUT"/b_*.log
for v in ${STAMPS:-}; do
  for shp in ${STAMP_SHAPES:-8x16384}; do
    sb=${shp%x*}; sc=${shp#*x}
    timeout 60 $V/bench_$v --heads 16 --batches $sb --contexts $sc --skip-1m --iters 10 > "$OUT/st_tmp.log" 2>&1
    echo "== stamps $v $sb x $sc rc=$? ($((SECONDS - t0)) s)"
    grep -E "^ +16 " "$OUT/st_tmp.log" | awk '{printf "  %3s x %7s %4s %9s us of_copy %s\n", $2, $3, $4, $5, $8}'
    python3 scripts/device/mla_mem_s5_stamps.py "$OUT/st_tmp.log"
    cat "$OUT/st_tmp.log" >> "$OUT/stamps.log"
  done
done
if [ "${NCU:-0}" = 1 ]; then
  timeout 120 ncu --clock-control none -k regex:mla_mem --launch-skip 6 --launch-count 4 \
    --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__registers_per_thread \
    $V/bench_v0 --heads 16 --batches 8 --contexts 16384 --skip-1m --iters 2 > "$OUT/ncu.txt" 2>&1
  echo "== ncu rc=$? ($((SECONDS - t0)) s)"
  grep -E "mla_mem|duration|dram__|grid_size|registers" "$OUT/ncu.txt" | sed 's/  */ /g' | cut -c1-110
fi
echo "total $((SECONDS - t0)) s"
# NCUP=variant: per-pipe use, stall reasons and shared-memory traffic of both split kernels at
# batch 32 x 64K (the FP8 compute question).
if [ -n "${NCUP:-}" ]; then
  M="gpu__time_duration.sum,sm__inst_executed.avg.per_cycle_active,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__warps_eligible.avg.per_cycle_active,smsp__warps_active.avg.per_cycle_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed.sum,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
  for k in 1 0; do
    timeout 150 ncu --clock-control none --kernel-name-base mangled -k "regex:mla_mem_kernelILb$k" --launch-skip 2 \
      --launch-count 1 --metrics "$M" $V/bench_$NCUP --heads 16 --batches 32 --contexts 65536 --skip-1m --iters 1 \
      > "$OUT/ncu_p$k.txt" 2>&1
    echo "== ncu fp8=$k rc=$? ($((SECONDS - t0)) s)"
    grep -E "gpu__time|per_cycle_active|issue_active|wavefronts|bank_conf|inst_executed.sum" "$OUT/ncu_p$k.txt" | sed 's/  */ /g'
    grep -E "stalled_.*ratio" "$OUT/ncu_p$k.txt" | awk '$NF+0 > 0.04 {print " " $1 " " $NF}' | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//'
    grep -E "pipe_.*pct" "$OUT/ncu_p$k.txt" | awk '$NF+0 > 2 {print " " $1 " " $NF}'
  done
  cuobjdump -sass $V/bench_$NCUP 2>/dev/null | awk '/Function : .*mla_mem_kernelILb1ELb0/{f=1;next} /Function :/{f=0} f' > /tmp/fp8.sass
  echo "== FP8 kernel SASS opcodes (static): $(grep -cE '^\s+/\*[0-9a-f]{4}\*/' /tmp/fp8.sass) instructions"
  grep -oE '^\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_]+' /tmp/fp8.sass | awk '{print $NF}' | sort | uniq -c | sort -rn | head -25 | tr '\n' ' '; echo
fi
