#!/usr/bin/env bash
# Session 4 probe of the memory-bound MLA kernel (one device call): times the bench_mla variants
# that scripts/device/mla_mem_variants.sh built (mla16bin/var/bench_<name>.gz) at 16 heads, then Nsight
# Compute on the baseline (FP8 and bf16 split kernels at batch 32 x 64K: stall reasons, pipe use;
# batch 1 x 4K: both kernels' durations). Logs under $OUT; a compact table on stdout.
#   VARS="v0 s8 a1" SHAPE="--batches 8 32 --contexts 16384 65536" NCU=1
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv,noheader
V=/tmp/mla-var; mkdir -p $V
for f in mla16bin/var/*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > $V/$n; chmod +x $V/$n; done
t0=$SECONDS
if [ -f mla16bin/test_mla.gz ] && [ -n "${TESTS:-1}" ]; then
  gunzip -c mla16bin/test_mla.gz > $V/test_mla; chmod +x $V/test_mla
  timeout 200 $V/test_mla ${GTEST:+--gtest_filter=$GTEST} > "$OUT/tests.log" 2>&1
  echo "tests rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED)|Failure|FAILED" "$OUT/tests.log" | head -20
fi
VARS=${VARS:-$(cd $V && ls | sed 's/bench_//')}
SHAPE=${SHAPE:---batches 8 32 --contexts 16384 65536}
for v in $VARS; do
  timeout 60 $V/bench_$v --heads 16 $SHAPE --skip-1m > "$OUT/b_$v.log" 2>&1
  echo "== $v rc=$? ($((SECONDS - t0)) s)"
  grep -E "^ +16 " "$OUT/b_$v.log" | awk '{print "  " $2 " x " $3 " " $4 " " $5 " us  of_copy " $8 "  " $11}'
  if [ -n "${B1:-1}" ]; then
    timeout 30 $V/bench_$v --heads 16 --batches 1 --contexts 1024 4096 --skip-1m > "$OUT/b1_$v.log" 2>&1
    grep -E "batch-1|^ +16 " "$OUT/b1_$v.log" | sed 's/^/  /' | grep -v " 1 +1024 .*fp8"
  fi
done
cat "$OUT"/b_*.log "$OUT"/b1_*.log > "$OUT/bench_all.log"; rm -f "$OUT"/b_*.log "$OUT"/b1_*.log
[ "${NCU:-1}" = 1 ] || exit 0
BIN=$V/bench_${NCUVAR:-v0}
M="gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum,sm__inst_executed.avg.per_cycle_active,smsp__warps_eligible.avg.per_cycle_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active"
for k in ${NCUK:-1 0}; do
  timeout 120 ncu --clock-control none --kernel-name-base mangled -k "regex:mla_mem_kernelILb$k" --launch-skip 2 \
    --launch-count 1 --metrics "$M" $BIN --heads 16 --batches 32 --contexts 65536 --skip-1m --iters 1 \
    > "$OUT/ncu_fp8$k.txt" 2>&1
  echo "== ncu fp8=$k rc=$? ($((SECONDS - t0)) s)"
  grep -E "gpu__time|dram__|inst_executed.sum|per_cycle_active|eligible|bank_conf" "$OUT/ncu_fp8$k.txt" | sed 's/  */ /g'
  grep -E "stalled_.*ratio" "$OUT/ncu_fp8$k.txt" | awk '$NF+0 > 0.05 {print " " $1 " " $NF}' | sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//'
  grep -E "pipe_.*pct" "$OUT/ncu_fp8$k.txt" | awk '$NF+0 > 3 {print " " $1 " " $NF}'
done
timeout 90 ncu --clock-control none --kernel-name-base mangled -k "regex:mla_mem" --launch-skip 6 --launch-count 2 \
  --metrics "$M,sm__cycles_active.max,launch__grid_size" \
  $BIN --heads 16 --batches 1 --contexts 4096 --skip-1m --iters 2 > "$OUT/ncu_b1.txt" 2>&1
echo "== ncu b1 rc=$? ($((SECONDS - t0)) s)"
grep -E "mla_mem|gpu__time|cycles_active.max|inst_executed.sum|stalled_.*ratio" "$OUT/ncu_b1.txt" | \
  awk '/stalled/ {if ($NF+0 > 0.3) print " " $1 " " $NF; next} {print}' | \
  sed 's/smsp__average_warps_issue_stalled_//; s/_per_issue_active.ratio//; s/  */ /g' | cut -c1-120
