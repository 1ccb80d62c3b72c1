#!/usr/bin/env bash
# One device call for the sm90 MLA kernel, session 5: unpacks binaries built on the dev machine
# (scripts/sm90_prebuild.sh, gzipped into sm90bin/ by scripts/device/sm90_s5_stage.sh), then, as asked:
#   TESTS=1  the MLA kernel tests (test_mla, gtest filter $FILTER)
#   GEMM=1   the bf16 GEMM rate (bench/mla_torch_baseline.py --quick; for the of-GEMM column)
#   BENCH="bench flags"  every bench_mla* binary with these flags (bench_mla_base = main's build)
#   NCU="bench flags"    ncu (clocks free, caches not flushed) on bench_mla and bench_mla_base:
#                        duration, DRAM bytes, L2 hit rate of each split and combine launch
# Logs under $OUT; the key lines on stdout.
#   OUT=dir TESTS=1 BENCH="--heads 128 --batches 8 32 --contexts 16384 --skip-1m" bash scripts/device/sm90_s5.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/sb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in sm90bin/*.gz; do gunzip -c "$f" > /tmp/sb/$(basename "$f" .gz); chmod +x /tmp/sb/$(basename "$f" .gz); done
if [ "${TESTS:-0}" = 1 ]; then
  timeout ${TT:-300} /tmp/sb/test_mla --gtest_filter="${FILTER:-*Mla*}" > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "FAILED|Failure|PASSED|error|worst|rel" "$OUT/tests.log" | head -30
fi
G=0
if [ "${GEMM:-0}" = 1 ]; then
  timeout 200 python3 bench/mla_torch_baseline.py --heads 128 --quick --json "$OUT/torch.json" > "$OUT/torch.log" 2>&1
  G=$(python3 -c "import json;print(json.load(open('$OUT/torch.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
  echo "gemm $G TFLOP/s"
fi
if [ -n "${BENCH:-}" ]; then
  for rep in $(seq 1 ${REPS:-1}); do
    for b in /tmp/sb/bench_mla*; do
      n=$(basename "$b")
      timeout ${BT:-200} "$b" $BENCH --gemm-tflops "$G" > "$OUT/$n.$rep.log" 2>&1
      echo "== $n rep $rep rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ |latency|floor|stamps" "$OUT/$n.$rep.log" | cut -c1-400
    done
  done
fi
if [ -n "${NCU:-}" ]; then
  for n in ${NCU_BINS:-bench_mla_base bench_mla}; do
    ncu --clock-control none --cache-control none --print-units base \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,launch__grid_size \
      --csv -k regex:mla_sm90 /tmp/sb/$n $NCU > "$OUT/ncu_$n.csv" 2> "$OUT/ncu_$n.err"
    echo "== ncu $n rc=$?"; tail -2 "$OUT/ncu_$n.err"
    python3 - "$OUT/ncu_$n.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, mi, vi, ii = (hdr.index(x) for x in ("Kernel Name", "Metric Name", "Metric Value", "ID"))
by = collections.OrderedDict()
for r in rows:
    by.setdefault(r[ii], {})["k"] = r[ki]
    by[r[ii]][r[mi]] = r[vi]
f = lambda x: float(x.replace(",", ""))
for i, d in by.items():
    print(f"  {i:>4} {d['k'][:28]:28} grid {d['launch__grid_size']:>6} {f(d['gpu__time_duration.sum'])/1e3:8.1f} us"
          f"  dram rd {f(d['dram__bytes_read.sum'])/1e6:8.1f} MB wr {f(d['dram__bytes_write.sum'])/1e6:7.1f} MB"
          f"  L2 hit {f(d['lts__t_sector_hit_rate.pct']):5.1f}%")
PY
  done
fi
