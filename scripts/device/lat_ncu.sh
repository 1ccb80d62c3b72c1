#!/usr/bin/env bash
# ncu (real clocks, no cache flush) on the latency kernel (bench --kernel lat): duration at
# batch 1 x 1K/4K/16K, and warp-stall sampling by source line at 16 and 128 heads x 4K.
#   OUT=dir bash scripts/device/lat_ncu.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
for f in bin/*/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
B="./bin/${V:-new}/bench_mla --kernel lat --batches 1 --skip-1m --iters 3"
for H in 16 128; do
  for C in 1024 4096 16384; do
    echo "== H $H ctx $C"
    timeout 60 $NCU --clock-control none --cache-control none -k regex:mla_lat -c 2 --launch-skip 4 \
      --metrics gpu__time_duration.sum $B --heads $H --contexts $C 2>&1 | grep -E "gpu__time"
  done
done
for H in 16 128; do
  timeout 120 $NCU --clock-control none --cache-control none -k regex:mla_lat -c 1 --launch-skip 4 \
    --import-source yes --section WarpStateStats --section SourceCounters --section SpeedOfLight \
    --section MemoryWorkloadAnalysis $B --heads $H --contexts 4096 > "$OUT/ncu_stall_$H.txt" 2>&1
  grep -E "Duration|Warp Cycles|Stall|stall|Throughput|Issued" "$OUT/ncu_stall_$H.txt" | head -40
done
