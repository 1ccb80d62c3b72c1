#!/usr/bin/env bash
# Session 6 (helper fp8h): the closing device call, on binaries built on the dev machine by
# scripts/device/fp8h_prebuild.sh (gzipped in fp8bin/; bench_mla_base = main at 811f8c2):
# test_mla (every MlaDecodeBf16Cuda test of this branch), helix_cuda_tests *Mla* and
# test_backend_ops from the cmake build (tbin/, when carried), then both benches at 128 heads,
# batch 8 / 32 / 64 x 16K / 64K, kAuto, alternating, and main's with --kernel sm90 (its FP8 through
# the sm90 kernel at every batch).   OUT=dir bash scripts/device/fp8h_final.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/fb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in fp8bin/*.gz; do gunzip -c "$f" > /tmp/fb/$(basename "$f" .gz); chmod +x /tmp/fb/$(basename "$f" .gz); done
timeout 400 /tmp/fb/test_mla > "$OUT/test_mla.log" 2>&1
echo "== test_mla rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]|Failure" "$OUT/test_mla.log" | head
python3 - "$OUT/test_mla.log" <<'PY'
import re, sys
v = [float(x) for x in re.findall(r"rel_l2 out ([0-9.e+-]+)", open(sys.argv[1]).read())]
print(f"cases {len(v)}, worst rel L2 of out {max(v):.2e}" if v else "no rel_l2 lines")
PY
if [ -d tbin ]; then  # the cmake build's test binaries (HELIX_SOURCE_DIR = /work/wt/fp8h)
  mkdir -p /work/wt; ln -sfn "$(cd ../.. && pwd)" /work/wt/fp8h  # the tree root (models/, fixtures)
  for f in tbin/*.gz; do gunzip -c "$f" > /tmp/fb/$(basename "$f" .gz); chmod +x /tmp/fb/$(basename "$f" .gz); done
  ldd /tmp/fb/helix_cuda_tests /tmp/fb/test_backend_ops | grep "not found"
  timeout 300 /tmp/fb/helix_cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
  echo "== helix_cuda_tests *Mla* rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]" "$OUT/cuda_tests_mla.log"
  timeout 300 /tmp/fb/test_backend_ops > "$OUT/backend_ops.log" 2>&1
  echo "== test_backend_ops rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]" "$OUT/backend_ops.log"
fi
S="--heads 128 --batches 8 32 64 --contexts 16384 65536 --skip-1m"
for r in 1 2; do
  for n in bench_mla_base bench_mla; do
    timeout 200 /tmp/fb/$n $S --json "$OUT/$n.$r.json" > "$OUT/$n.$r.log" 2>&1
    echo "== $n auto rep $r rc=$?"; grep -E "^ +128 " "$OUT/$n.$r.log" | cut -c1-100
  done
done
timeout 200 /tmp/fb/bench_mla_base $S --kernel sm90 > "$OUT/bench_mla_base_sm90.log" 2>&1
echo "== bench_mla_base --kernel sm90 rc=$?"; grep -E "^ +128 .* fp8 " "$OUT/bench_mla_base_sm90.log" | cut -c1-100
