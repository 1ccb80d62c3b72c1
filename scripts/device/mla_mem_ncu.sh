#!/usr/bin/env bash
# Nsight Compute on the memory-bound MLA kernel (bf16 then FP8 KV) at one shape; reports under $OUT.
#   SHAPE="--batches 32 --contexts 65536"  BIN=mla16bin (bench_mla built for the device)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
BIN=${BIN:-mla16bin}
for v in 0 1; do
  ncu --clock-control none --kernel-name-base mangled -k "regex:mla_mem_kernelILb$v" --launch-skip 2 \
    --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy \
    --section InstructionStats \
    "$BIN/bench_mla" --heads 16 ${SHAPE:---batches 32 --contexts 65536} --skip-1m --iters 1 \
    > "$OUT/ncu$v.txt" 2>&1
  echo "== kv $v: rc=$?"
  grep -E "Duration|Throughput|Memory \[%\]|DRAM|Stall|Issue|Warp Cycles|Eligible|Active Warps|Registers|No Eligible|Executed Ipc|Issued Ipc|L1/TEX Hit|Bank" "$OUT/ncu$v.txt" | head -60
done
