#!/usr/bin/env bash
# Device call 1 of the batch-1 latency work: where the time goes. Runs the fixed-cost probe
# (lat_probe.cu), the main tree's bench at batch 1 x 1K/4K/16K, and ncu (real clocks, no cache
# flush) on the batch-1 x 4K kernels. Binaries come prebuilt (lat_prebuild.sh) in bin/.
#   OUT=dir bash scripts/device/lat_probe.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
./bin/lat_probe 2>&1 | tee "$OUT/probe.txt"
./bin/base/bench_mla --heads 16 128 --batches 1 --contexts 1024 4096 16384 --skip-1m --iters 50 2>&1 |
  tee "$OUT/bench_base.txt" | grep -E "floor|bf16|fp8|latency"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for H in 16 128; do
  timeout 120 $NCU --clock-control none --cache-control none -k regex:mla -c 12 \
    --metrics gpu__time_duration.sum,sm__cycles_elapsed.avg.per_second,launch__grid_size,launch__shared_mem_per_block_dynamic \
    ./bin/base/bench_mla --heads $H --batches 1 --contexts 4096 --skip-1m --iters 3 > "$OUT/ncu_$H.txt" 2>&1
  grep -E "mla_|gpu__time|grid_size|per_second" "$OUT/ncu_$H.txt" | head -40
done
