#!/usr/bin/env bash
# One device call for the sm90 MLA kernel (H >= 64): unpacks the binaries built on the dev machine
# by scripts/device/sm90_prebuild.sh (gzipped in sm90bin/), runs the MLA tests, optionally the PyTorch
# baseline (TORCH=1), every bench binary (bench_mla and its variants bench_mla_<name>) with
# $BQ, and optionally ncu kernel durations (NCU="bench flags"). Logs under $OUT.
#   OUT=dir FILTER=gtest-filter TORCH=0|1 BQ="--heads 128 ..." NCU="..." bash scripts/device/sm90_device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/sb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in sm90bin/*.gz; do gunzip -c "$f" > /tmp/sb/$(basename "$f" .gz); chmod +x /tmp/sb/$(basename "$f" .gz); done
if [ "${TESTS:-1}" = 1 ]; then
  timeout 300 /tmp/sb/test_mla --gtest_filter="${FILTER:-MlaDecodeBf16*}" > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "FAILED|Failure|PASSED|error" "$OUT/tests.log" | head -30
  grep -B3 -A3 "Failure" "$OUT/tests.log" | head -60
fi
GEMM=0
if [ "${TORCH:-0}" = 1 ]; then
  python3 bench/mla_torch_baseline.py --heads 128 --json "$OUT/mla_torch_baseline.json" ${TQ:-} > "$OUT/torch.log" 2>&1
  GEMM=$(python3 -c "import json;print(json.load(open('$OUT/mla_torch_baseline.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
  head -3 "$OUT/torch.log"
fi
for b in /tmp/sb/bench_mla*; do
  n=$(basename "$b")
  J=""; [ "$n" = bench_mla ] && J="--json $OUT/$n.json"  # at most 8 files come back
  K=""; case "$n" in *_sm90) K="--kernel sm90" ;; esac   # a copy of bench_mla forcing the kernel
  timeout ${BT:-300} "$b" ${BQ:-} $K --gemm-tflops "$GEMM" $J > "$OUT/$n.log" 2>&1
  echo "== $n rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ |latency|floor" "$OUT/$n.log"
done
if [ -n "${NCU:-}" ]; then
  for ctx in ${NCU_CTX:-4096 16384}; do
    ncu --clock-control none --cache-control none --print-units base --metrics gpu__time_duration.sum,launch__grid_size \
      --csv -k regex:mla_sm90 /tmp/sb/bench_mla $NCU --contexts $ctx > "$OUT/ncu_$ctx.csv" 2> "$OUT/ncu.err"
    echo "ncu context $ctx rc=$?"; tail -2 "$OUT/ncu.err"
    python3 - "$OUT/ncu_$ctx.csv" <<'PY'
import csv, sys, collections, statistics
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, mi, vi, ii = (hdr.index(x) for x in ("Kernel Name", "Metric Name", "Metric Value", "ID"))
by = collections.OrderedDict()
for r in rows:
    by.setdefault(r[ii], {})["k"] = r[ki]
    by[r[ii]][r[mi]] = r[vi]
seq = list(by.values())
groups = []  # runs of (main, combine) pairs with the same combine grid
for a, b in zip(seq[0::2], seq[1::2]):
    g = b["launch__grid_size"].replace(",", "")
    f = lambda x: float(x.replace(",", ""))
    t = (f(a["gpu__time_duration.sum"]) / 1e3, f(b["gpu__time_duration.sum"]) / 1e3)
    if groups and groups[-1][0] == g: groups[-1][1].append(t)
    else: groups.append((g, [t]))
for g, ts in groups:
    m = statistics.median(x[0] for x in ts); c = statistics.median(x[1] for x in ts)
    print(f"  combine grid {g:>6} (batch {int(g)//128}): main {m:8.1f} us, combine {c:6.1f} us ({len(ts)} launches)")
PY
    rm -f "$OUT/ncu_$ctx.csv"
  done
  rm -f "$OUT/ncu.err"
fi
