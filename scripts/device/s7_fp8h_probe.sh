#!/usr/bin/env bash
# Session 7 (helper fp8h): one device call on binaries built on the dev machine by
# scripts/device/fp8h_prebuild.sh (xz-compressed in fp8bin/ of the carried copy: bench_mla_base and
# test_mla_base = main, bench_mla_<v> / test_mla_<v> = this branch built with a variant's -D flags).
#   TESTBINS="test_mla_x ..."  each with --gtest_filter=$TESTS (default '*Sm90*:*Fp8*')
#   BINS="bench_mla_base bench_mla_x ..."  each with $BENCH, alternating over REPS rounds
#   OUT=dir TESTBINS=... BINS=... bash scripts/device/s7_fp8h_probe.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/fb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in fp8bin/*.xz; do  # xz: the carried copy must stay under 64 MiB
  d=/tmp/fb/$(basename "$f" .xz)
  python3 -c "import lzma, sys; open(sys.argv[2], 'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$d"
  chmod +x "$d"
done
for t in ${TESTBINS:-}; do
  timeout ${TT:-240} /tmp/fb/$t --gtest_filter="${TESTS:-*Sm90*:*Fp8*}" > "$OUT/$t.log" 2>&1
  echo "== $t rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]|Failure" "$OUT/$t.log" | head -8
  python3 - "$OUT/$t.log" <<'PY'
import re, sys
v = [float(x) for x in re.findall(r"rel_l2 out ([0-9.e+-]+)", open(sys.argv[1]).read())]
print(f"   cases {len(v)}, worst rel L2 of out {max(v):.2e}" if v else "   no rel_l2 lines")
PY
done
BENCH=${BENCH:---heads 128 --batches 8 32 --contexts 16384 65536 --skip-1m}
for rep in $(seq 1 ${REPS:-2}); do
  for n in ${BINS:-bench_mla_base}; do
    timeout ${BT:-120} /tmp/fb/$n $BENCH > "$OUT/$n.$rep.log" 2>&1
    echo "== $n rep $rep rc=$?"; grep -E "^ +128 " "$OUT/$n.$rep.log" | cut -c1-120
  done
done
