#!/usr/bin/env bash
# Session 7 (helper fp8h): one device call on binaries built on the dev machine by
# scripts/device/fp8h_prebuild.sh (xz-compressed in fp8bin/ of the carried copy, which must stay
# under 64 MiB: bench_mla_base = main, bench_mla_<v> / test_mla_<v> = this branch built with a
# variant's -D flags).
#   TESTBINS="test_mla_x test_mla_y@filter ..."  each with --gtest_filter=$TESTS (default
#                         '*Sm90*:*Fp8*') or its own filter
#   BINS="bench_mla_base bench_mla_x ..."  each with $BENCH, alternating over REPS rounds
#   OUT=dir TESTBINS=... BINS=... bash scripts/device/s7_fp8h_probe.sh
# Every log goes to $OUT/all.log (few files come back); a summary (tests, then per binary and
# shape the queued µs of each round) is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/fb
LOG=$OUT/all.log
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in fp8bin/*.xz; do
  d=/tmp/fb/$(basename "$f" .xz)
  python3 -c "import lzma, sys; open(sys.argv[2], 'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$d"
  chmod +x "$d"
done
: > "$OUT/tests.txt"
for tf in ${TESTBINS:-}; do  # name or name@filter
  t=${tf%%@*}; f=${TESTS:-*Sm90*:*Fp8*}; [ "$tf" != "$t" ] && f=${tf#*@}
  timeout ${TT:-240} /tmp/fb/$t --gtest_filter="$f" > /tmp/fb/$t.log 2>&1
  rc=$?
  { echo "== $t ($f) rc=$rc"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]|Failure" /tmp/fb/$t.log | head -8
    python3 -c "
import re, sys
v = [float(x) for x in re.findall(r'rel_l2 out ([0-9.e+-]+)', open(sys.argv[1]).read())]
print(f'   cases {len(v)}, worst rel L2 of out {max(v):.2e}' if v else '   no rel_l2 lines')" /tmp/fb/$t.log
  } >> "$OUT/tests.txt"
  cat /tmp/fb/$t.log >> "$LOG"
done
BENCH=${BENCH:---heads 128 --batches 8 32 --contexts 16384 65536 --skip-1m}
for rep in $(seq 1 ${REPS:-2}); do
  for n in ${BINS:-bench_mla_base}; do
    timeout ${BT:-120} /tmp/fb/$n $BENCH > /tmp/fb/$n.$rep.log 2>&1
    echo "== $n rep $rep rc=$?" | tee -a "$LOG"; cat /tmp/fb/$n.$rep.log >> "$LOG"
  done
done
cat "$OUT/tests.txt"
python3 - ${BINS:-bench_mla_base} <<'PY'
import re, sys
reps = {}
for n in sys.argv[1:]:
    for r in range(1, 10):
        try:
            txt = open(f"/tmp/fb/{n}.{r}.log").read()
        except OSError:
            break
        for m in re.finditer(r"^ +128 +(\d+) +(\d+) +(bf16|fp8) +([0-9.]+)", txt, re.M):
            reps.setdefault((int(m[1]), int(m[2]), m[3]), {}).setdefault(n, []).append(float(m[4]))
for key in sorted(reps):
    print(f"{key[0]:>3} x {key[1] // 1024:>3}K {key[2]:>4}: " + "  ".join(
        f"{n.replace('bench_mla_', '')} {'/'.join(f'{x:.1f}' for x in v)}" for n, v in reps[key].items()))
PY
