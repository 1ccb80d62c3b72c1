#!/usr/bin/env bash
# One device call for the sm90 kernel's dynamic tail (session 5, helper `tail`): unpacks binaries
# built on the dev machine and gzipped into tailbin/ (bench_mla_base: main's
# bench_mla_decode_bf16 by scripts/device/sm90_prebuild.sh on a clean export of main; bench_mla,
# test_mla: this branch's, same script; helix_cuda_tests, test_backend_ops: this branch's cmake
# build, optional), runs the MLA tests, then main's bench and the branch's, alternating, REPS times.
# TESTS=0 skips the tests; NCU="bins" runs ncu's WarpStateStats (raw page: the stall reasons) on one
# split launch of 8 x 16K bf16 for each of those binaries.
#   OUT=dir [REPS=2] [BENCH="flags"] [BINS="bench_mla_base bench_mla ..."] bash scripts/device/tail_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/tb /work/wt
ln -sfn "$PWD" /work/wt/tail  # HELIX_SOURCE_DIR of the cmake-built tests
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in tailbin/*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > /tmp/tb/$n; chmod +x /tmp/tb/$n; done
if [ "${TESTS:-1}" = 0 ]; then
  echo "tests skipped"
elif [ ! -x /tmp/tb/helix_cuda_tests ]; then  # the same MLA tests, without the cmake build
  timeout 240 /tmp/tb/test_mla --gtest_filter='*Mla*' > "$OUT/test_mla.log" 2>&1
  echo "test_mla *Mla* rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]|Failure" "$OUT/test_mla.log" | head -20
else
  ldd /tmp/tb/helix_cuda_tests /tmp/tb/test_backend_ops | grep "not found"
  timeout 180 /tmp/tb/helix_cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
  rc=$?; echo "helix_cuda_tests *Mla* rc=$rc"; [ $rc = 124 ] && { tail -5 "$OUT/cuda_tests_mla.log"; exit 1; }
  grep -E "^\[  (PASSED|FAILED)|^\[==========\]|Failure" "$OUT/cuda_tests_mla.log" | head -20
  timeout 200 /tmp/tb/test_backend_ops > "$OUT/backend_ops.log" 2>&1
  echo "test_backend_ops rc=$?"; tail -3 "$OUT/backend_ops.log"
fi
BENCH=${BENCH:---heads 128 --batches 8 32 64 --contexts 16384 65536 --skip-1m}
for rep in $(seq 1 ${REPS:-2}); do
  for n in ${BINS:-bench_mla_base bench_mla}; do
    timeout 90 /tmp/tb/$n $BENCH --json "$OUT/$n.$rep.json" > "$OUT/$n.$rep.log" 2>&1
    echo "== $n rep $rep rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ " "$OUT/$n.$rep.log" | cut -c1-200
  done
done
for n in ${NCU:-}; do
  timeout 90 ncu --section WarpStateStats --page raw --csv -k regex:mla_sm90_kernel --launch-skip 3 -c 1 \
    /tmp/tb/$n --heads 128 --batches 8 --contexts 16384 --skip-1m --iters 5 > "$OUT/ncu_$n.csv" 2> "$OUT/ncu_$n.err"
  echo "== ncu $n rc=$?"; tail -2 "$OUT/ncu_$n.err"
  python3 - "$OUT/ncu_$n.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
if not rows: sys.exit()
hdr, vals = rows[0], rows[-1]
for h, v in zip(hdr, vals):
    if "stalled" in h and "issue_active" in h or "duration" in h or "inst_executed" in h:
        try:
            if float(v.replace(",", "")) < 0.05: continue
        except ValueError: pass
        print(f"  {h} = {v}")
PY
done
