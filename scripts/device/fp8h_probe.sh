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
      --section SpeedOfLight -o /tmp/ncu_$n -f /tmp/fb/$n $NCU > /tmp/ncu_$n.log 2>&1
    echo "== ncu $n rc=$?"; tail -1 /tmp/ncu_$n.log
    $NCUB -i /tmp/ncu_$n.ncu-rep --page details > /tmp/ncu_${n}_details.txt 2>&1
    grep -E "Duration|Warp Cycles Per Issued|Compute \(SM\) Throughput" /tmp/ncu_${n}_details.txt | head -5
    $NCUB -i /tmp/ncu_$n.ncu-rep --page source --csv --print-source sass > /tmp/ncu_${n}_sass.csv 2>/dev/null
    python3 - /tmp/ncu_${n}_sass.csv > "$OUT/ncu_${n}_stalls.txt" <<'PY' || true
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hi = next(i for i, r in enumerate(rows) if "Source" in r)
hdr = rows[hi]; data = [r for r in rows[hi + 1:] if len(r) == len(hdr)]
si = hdr.index("Source"); wi = hdr.index("Warp Stall Sampling (All Samples)")
st = [i for i, h in enumerate(hdr) if h.startswith("stall_")]
f = lambda x: float(x.replace(",", "") or 0)
tot = sum(f(r[wi]) for r in data)
print(f"total samples {tot:.0f}")
order = sorted(range(len(data)), key=lambda i: -f(data[i][wi]))
for i in order[:14]:
    r = data[i]
    reasons = sorted(((f(r[j]), hdr[j]) for j in st), reverse=True)[:3]
    print(f"--- {f(r[wi]) / tot * 100:5.1f}% line {i}: {r[si][:90]}   " + " ".join(f"{n}={v:.0f}" for v, n in reasons if v > 0))
    for k in range(max(0, i - 7), min(len(data), i + 2)):
        print(f"      {k:5d} {f(data[k][wi]):6.0f} {data[k][si][:100]}")
PY
    head -c 9000 "$OUT/ncu_${n}_stalls.txt"
  done
fi
