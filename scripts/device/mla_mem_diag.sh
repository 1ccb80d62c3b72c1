#!/usr/bin/env bash
# Split / combine kernel durations (Nsight Compute) at a few shapes of the memory-bound MLA kernel.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-mla16bin}
for shape in "1 4096" "8 16384" "32 4096"; do
  set -- $shape
  echo "== batch $1 context $2 (bf16 split, combine)"
  ncu --clock-control none -k regex:mla_mem --launch-skip 4 --launch-count 2 --section SpeedOfLight \
    "$BIN/bench_mla" --heads 16 --batches $1 --contexts $2 --skip-1m --iters 1 2>&1 |
    grep -E "mla_mem_(kernel|combine)|Duration" | sed 's/(helix::cuda::mla_bf16::Args)//'
done
