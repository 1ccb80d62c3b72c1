#!/usr/bin/env bash
# Per-instruction warp-stall samples (ncu source page, SASS) of the latency kernel at batch 1 x
# 64K, 16 heads (steady-state tiles), into $OUT/src_64k.csv; and the phase trace.
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
for f in bin/*/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done
bash scripts/device/lat_run_trace.sh
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 150 $NCU --clock-control none --cache-control none -k regex:mla_lat -c 1 --launch-skip 4 \
  --section SourceCounters --section WarpStateStats -o "$OUT/rep" -f \
  ./bin/new/bench_mla --kernel lat --heads 16 --batches 1 --contexts 65536 --skip-1m --iters 3 > /dev/null 2>&1
$NCU -i "$OUT/rep.ncu-rep" --page source --csv --print-source sass > "$OUT/src_64k.csv" 2> "$OUT/src_err.txt"
$NCU -i "$OUT/rep.ncu-rep" --page details > "$OUT/details.txt" 2>&1
rm -f "$OUT/rep.ncu-rep"
wc -c "$OUT"/*.csv; head -c 600 "$OUT/src_64k.csv"; echo; head -5 "$OUT/src_err.txt"
grep -E "Stall|stall" "$OUT/details.txt" | head -20
