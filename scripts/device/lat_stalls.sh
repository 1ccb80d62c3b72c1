#!/usr/bin/env bash
# Warp stall reasons (ncu, real clocks, no cache flush) of the latency kernel and of the main
# tree's split + combine kernels at batch 1 x 4K, 16 heads.
cd "$(dirname "$0")/../.."
for f in bin/*/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
M='regex:smsp__warp_issue_stalled_.*_per_warp_active\.pct,smsp__inst_executed.sum,sm__cycles_active.avg,gpu__time_duration.sum'
for v in "new --kernel lat" "base"; do
  set -- $v
  echo "== $v"
  timeout 100 $NCU --clock-control none --cache-control none -k regex:mla -c 2 --launch-skip 4 \
    --metrics "$M" ./bin/$1/bench_mla ${2:-} ${3:-} --heads 16 --batches 1 --contexts 4096 --skip-1m --iters 3 2>&1 |
    grep -E "mla_|stalled|inst_executed|cycles_active|time_dur" | awk '$NF+0 > 0.5 || /mla_|inst|cycles|time/'
done
