#!/usr/bin/env bash
# Session 6 (helper fp8h): one device call on binaries built on the dev machine by
# scripts/device/fp8h_prebuild.sh (gzipped in fp8bin/ of the carried copy): bench_mla_base (main),
# bench_mla (this branch) and bench_mla_<variant>. As asked:
#   TESTS="gtest filter"  test_mla (this branch) with that filter; TESTBINS="test_mla test_mla_x" for more
#   BENCH="bench flags"   every bench_mla* binary with these flags (alternating over REPS rounds)
#   NCU="bench flags"     ncu warp-state and source counters of the FP8 split kernel of bench_mla
#                         (and of NCU_BINS), the stalls per SASS line summarised
#   OUT=dir TESTS='*Sm90Fp8*' BENCH="--heads 128 --batches 8 --contexts 16384 --kernel sm90 --skip-1m" \
#     bash scripts/device/fp8h_probe.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/fb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in fp8bin/*.gz; do gunzip -c "$f" > /tmp/fb/$(basename "$f" .gz); chmod +x /tmp/fb/$(basename "$f" .gz); done
if [ -n "${TESTS:-}" ]; then
  for t in ${TESTBINS:-test_mla}; do
    timeout ${TT:-300} /tmp/fb/$t --gtest_filter="$TESTS" > "$OUT/$t.log" 2>&1
    echo "== $t rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]|Failure|rel" "$OUT/$t.log" | head -20
  done
fi
if [ -n "${BENCH:-}" ]; then
  for rep in $(seq 1 ${REPS:-1}); do
    for b in ${BENCH_BINS:-/tmp/fb/bench_mla*}; do
      n=$(basename "$b")
      timeout ${BT:-200} "$b" $BENCH > "$OUT/$n.$rep.log" 2>&1
      echo "== $n rep $rep rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ " "$OUT/$n.$rep.log" | cut -c1-130
    done
  done
fi
if [ -n "${NCU:-}" ]; then
  NCUB=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
  for n in ${NCU_BINS:-bench_mla}; do
    timeout ${NT:-150} $NCUB --clock-control none --cache-control none --kernel-name-base mangled \
      -k regex:mla_sm90_kernelILb1 -c 1 --section WarpStateStats --section SourceCounters \
      --section SpeedOfLight -o "$OUT/ncu_$n" -f /tmp/fb/$n $NCU > "$OUT/ncu_$n.log" 2>&1
    echo "== ncu $n rc=$?"; tail -2 "$OUT/ncu_$n.log"
    $NCUB -i "$OUT/ncu_$n.ncu-rep" --page details > "$OUT/ncu_${n}_details.txt" 2>&1
    grep -E "Duration|Warp Cycles Per Issued|Issue Slots Busy|Compute \(SM\) Throughput|Stall" "$OUT/ncu_${n}_details.txt" | head -20
    $NCUB -i "$OUT/ncu_$n.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_${n}_sass.csv" 2> "$OUT/ncu_${n}_sass.err"
    echo "sass csv rc=$? lines $(wc -l < "$OUT/ncu_${n}_sass.csv")"; head -c 300 "$OUT/ncu_${n}_sass.err"
    python3 - "$OUT/ncu_${n}_sass.csv" <<'PY' || true
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hi = next(i for i, r in enumerate(rows) if any("Source" == c or "Address" == c for c in r))
hdr = rows[hi]; data = rows[hi + 1:]
print("columns:", [h for h in hdr][:40])
def col(name):
    for i, h in enumerate(hdr):
        if h == name: return i
    return None
si = col("Source"); wi = col("Warp Stall Sampling (All Samples)") or col("Warp Stall Sampling (All Cycles)")
if wi is None:
    print("no sampling column"); sys.exit()
f = lambda x: float(x.replace(",", "") or 0)
tot = sum(f(r[wi]) for r in data if len(r) > wi)
top = sorted(data, key=lambda r: -f(r[wi]) if len(r) > wi else 0)[:45]
print(f"total samples {tot:.0f}")
for r in top:
    print(f"{f(r[wi]) / tot * 100:5.1f}% {r[0][:8]:8} {r[si][:110]}")
PY
  done
fi
