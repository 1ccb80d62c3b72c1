#!/usr/bin/env bash
# Session 6 (fp8): one device call on the binaries scripts/device/fp8_s6_build.sh made
# (build-bin/*.gz, carried):
# - TESTS="v ...": the MLA kernel tests (test_mla_<v>), the worst rel L2 lines of the FP8 cases;
# - each bench in VARS (bench_<v>) at 16 heads, SHAPE, ROUNDS times alternating; key lines printed;
# - NCUP=variant: ncu stall reasons / pipes of that variant's FP8 split kernel at 32 x 64K, and its
#   SASS opcode histogram;
# - FULL="v ...": the acceptance shapes at 16 heads (with 1M), JSON under $OUT;
# - TBO=1: test_backend_ops (build-bin/test_backend_ops.{gz,xz}, libraries beside it);
# - HCT="filter" (HCT_SRC=the source dir it was built in): helix_cuda_tests.
# Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
V=/tmp/mla-fp8; mkdir -p $V
for f in build-bin/*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > $V/$n; chmod +x $V/$n; done
for f in build-bin/*.xz; do  # python's lzma: no xz binary needed there
  [ -f "$f" ] || continue
  n=$(basename "$f" .xz)
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$f" $V/$n
  chmod +x $V/$n
done
cp build-bin/*.so.* $V/ 2>/dev/null  # libraries a carried binary finds beside it ($ORIGIN)
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
t0=$SECONDS
for v in ${TESTS:-}; do
  timeout 300 $V/test_mla_$v --gtest_filter="${TFILTER:-*}" > "$OUT/tests_$v.log" 2>&1; echo "tests $v rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED)|Failure|FAILED" "$OUT/tests_$v.log" | head -30
  grep -E "fp8" "$OUT/tests_$v.log" | sed -E 's/.*rel_l2 out ([0-9.e+-]+) lse ([0-9.e+-]+).*/\1 \2/' |
    sort -g | tail -2 | sed 's/^/  worst fp8 rel_l2 out, lse: /'
done
# TBO=1: test_backend_ops (built on the dev machine, static OpenBLAS, libfmt carried beside it)
if [ "${TBO:-0}" = 1 ]; then
  timeout 300 $V/test_backend_ops > "$OUT/test_backend_ops.log" 2>&1
  echo "test_backend_ops rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED)|FAILED|mla_decode" "$OUT/test_backend_ops.log" | head -20
fi
# HCT="gtest-filter": helix_cuda_tests (dynamic MPI: its libraries carried beside it; it reads the
# fixtures from the source dir it was built in, linked to this tree)
if [ -n "${HCT:-}" ]; then
  [ -n "${HCT_SRC:-}" ] && mkdir -p "$(dirname "$HCT_SRC")" && ln -sfn "$PWD" "$HCT_SRC"
  LD_LIBRARY_PATH=$V:${LD_LIBRARY_PATH:-} timeout 400 $V/helix_cuda_tests --gtest_filter="$HCT" \
    > "$OUT/helix_cuda_tests.log" 2>&1
  echo "helix_cuda_tests rc=$? ($((SECONDS - t0)) s)"
  grep -E "^\[  (PASSED|FAILED)|FAILED|error" "$OUT/helix_cuda_tests.log" | head -20
fi
SHAPE=${SHAPE:---batches 8 32 --contexts 16384 65536}
for r in $(seq 1 "${ROUNDS:-1}"); do
  for v in ${VARS:-base}; do
    timeout 200 $V/bench_$v --heads 16 $SHAPE --skip-1m --iters ${ITERS:-10} > "$OUT/b_${v}_$r.log" 2>&1
    echo "== $v round $r rc=$? ($((SECONDS - t0)) s)"
    grep -E "^ +16 " "$OUT/b_${v}_$r.log" | awk '{printf "  %3s x %7s %4s %8s us of_copy %s fp8/bf16 %s iso %s\n", $2, $3, $4, $5, $8, $11, $12}'
  done
done
cat "$OUT"/b_*.log > "$OUT/bench_all.log" 2>/dev/null; rm -f "$OUT"/b_*.log
# FULL="v ...": the acceptance shapes at 16 heads (batch 8/32/64 x 16K/64K/128K, then 1M), JSON kept
for v in ${FULL:-}; do
  timeout 300 $V/bench_$v --heads 16 --batches 8 32 64 --contexts 16384 65536 131072 \
    --iters ${ITERS:-10} --json "$OUT/full_$v.json" > "$OUT/full_$v.log" 2>&1
  echo "== full $v rc=$? ($((SECONDS - t0)) s)"
  grep -E "^ +16 " "$OUT/full_$v.log" | awk '{printf "  %3s x %7s %4s %8s us of_copy %s fp8/bf16 %s iso %s\n", $2, $3, $4, $5, $8, $11, $12}'
done
if [ -n "${NCUP:-}" ]; then
  M="gpu__time_duration.sum,sm__inst_executed.avg.per_cycle_active,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__warps_eligible.avg.per_cycle_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed.sum,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
  for v in $NCUP; do
    timeout 150 ncu --clock-control none --kernel-name-base mangled -k "regex:mla_mem_kernelILb1" --launch-skip 2 \
      --launch-count 1 --metrics "$M" $V/bench_$v --heads 16 --batches 32 --contexts 65536 --skip-1m --iters 1 \
      > "$OUT/ncu_$v.txt" 2>&1
    echo "== ncu $v fp8 rc=$? ($((SECONDS - t0)) s)"
    grep -E "gpu__time|per_cycle_active|issue_active|wavefronts|bank_conf|inst_executed.sum" "$OUT/ncu_$v.txt" | sed 's/  */ /g'
    grep -E "stalled_.*ratio" "$OUT/ncu_$v.txt" | awk '$NF+0 > 0.04 {printf " %s %s;", $1, $NF}' | sed 's/smsp__average_warps_issue_stalled_//g; s/_per_issue_active.ratio//g'; echo
    grep -E "pipe_.*pct" "$OUT/ncu_$v.txt" | awk '$NF+0 > 2 {printf " %s %s;", $1, $NF}' | sed 's/sm__inst_executed_pipe_//g; s/.avg.pct_of_peak_sustained_active//g'; echo
    cuobjdump -sass $V/bench_$v 2>/dev/null | awk '/Function : .*mla_mem_kernelILb1ELb0/{f=1;next} /Function :/{f=0} f' > "$OUT/fp8_$v.sass"
    echo "== $v FP8 kernel SASS: $(grep -cE '^\s+/\*[0-9a-f]{4}\*/' "$OUT/fp8_$v.sass") instructions"
    grep -oE '^\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_.]+' "$OUT/fp8_$v.sass" | awk '{print $NF}' | sort | uniq -c | sort -rn | head -30 | tr '\n' ' '; echo
    gzip -f "$OUT/fp8_$v.sass"
  done
fi
for v in ${TESTS:-}; do  # again at the end (the output's tail is what comes back)
  echo "tests $v: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/tests_$v.log" | tr '\n' ' ')"
  # worst rel L2 (out, lse) per KV dtype and head count: the case line, then its rel_l2 line
  awk '/^mla_decode_bf16 case:/ {kv=$0; sub(/.* kv /, "", kv); sub(/ .*/, "", kv); h=$4}
       /rel_l2 out/ {k=kv " H" (h+0 <= 32 ? "<=32" : ">32"); if ($3+0 > w[k]) {w[k]=$3+0; l[k]=$5}}
       END {for (k in w) printf "  worst rel_l2 %s: out %.2e lse %s\n", k, w[k], l[k]}' \
    "$OUT/tests_$v.log" | sort
done
echo "total $((SECONDS - t0)) s"
