#!/usr/bin/env bash
# The batch-1 latency work on the device, one call: the MLA kernel tests of this tree, then
# bench_mla_decode_bf16 of the main tree (bin/base) and of this tree (bin/new) alternating, at
# batch 1 x 1K/4K/16K (16 and 128 heads; stream and graph latency, the launch floor), and the
# latency kernel forced (--kernel lat) at longer contexts to place kAuto's limits. Binaries come
# prebuilt by scripts/device/lat_prebuild.sh.
#   OUT=dir TESTS='*Latency*' LONG=1 ONEM=1 bash scripts/device/lat_device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
for f in bin/*/*.gz; do [ -f "$f" ] && gunzip -f "$f"; done  # carried gzipped (64 MiB limit)
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [ -n "${TESTS:-}" ]; then
  t0=$SECONDS
  timeout 300 ./bin/new/test_mla --gtest_filter="MlaDecodeBf16Cuda.${TESTS}" > "$OUT/tests.log" 2>&1
  echo "tests rc $? ($((SECONDS - t0)) s)"
  grep -E "^\[ *(FAILED|PASSED) *\]|tests ran|Failure|Expected|Which is" "$OUT/tests.log" | head -30
  echo "worst rel_l2 out: $(grep -o 'rel_l2 out [^ ]*' "$OUT/tests.log" | awk '{print $3}' | sort -g | tail -1)"
fi
SHAPES="--heads 16 128 --batches 1 --contexts 1024 4096 16384 --skip-1m --iters 50"
for round in 1 2; do
  for v in base new; do
    echo "== $v round $round"
    ./bin/$v/bench_mla $SHAPES 2>&1 | tee "$OUT/bench_${v}_$round.txt" |
      grep -E "floor|latency|16384 (bf16|fp8)" | sed 's/^ *//'
  done
done
if [ -n "${LONG:-}" ]; then
  echo "== new, --kernel lat, longer contexts"
  ./bin/new/bench_mla --kernel lat --heads 16 128 --batches 1 2 --contexts 4096 16384 65536 --skip-1m \
    --iters 20 2>&1 | tee "$OUT/bench_lat_long.txt" | grep -E " bf16 "
  echo "== base, same shapes"
  ./bin/base/bench_mla --heads 16 128 --batches 1 2 --contexts 4096 16384 65536 --skip-1m --iters 20 2>&1 |
    tee "$OUT/bench_base_long.txt" | grep -E " bf16 "
fi
if [ -n "${ONEM:-}" ]; then
  for v in base new; do
    echo "== $v 1 x 1M (auto)"
    ./bin/$v/bench_mla --heads 16 128 --batches 1 --contexts 1048576 --skip-1m --iters 5 2>&1 |
      grep -E " bf16 | fp8 "
  done
  echo "== new 1 x 1M, --kernel lat"
  ./bin/new/bench_mla --kernel lat --heads 16 --batches 1 --contexts 1048576 --skip-1m --iters 5 2>&1 |
    grep -E " bf16 "
fi
