#!/usr/bin/env bash
# bf16 tiles of the memory-bound MLA kernel by TMA, in one device call: builds this tree and a
# base tree (main before the change, carried next to it) with device_verify.sh's flags, in
# parallel; runs the MLA test binary's tests on this tree; then bench_mla_decode_bf16 --heads 16
# alternating base / this tree twice (batch 8/32/64 x 16K/64K/128K, then batch 1 x 4K).
#   OUT=dir bash scripts/device/mla_memtma_device.sh <base-tree>
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
BASE=$1
mkdir -p "$OUT"
. scripts/devdeps_env.sh "${DEVDEPS:-../../.devdeps}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
build() {  # src dir, build dir, log
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_WERROR=ON -DHELIX_BENCH=ON \
    -DHELIX_SANITIZE_TESTS=OFF > "$3" 2>&1 &&
    ninja -C "$2" -j8 helix_cuda_tests bench_mla_decode_bf16 >> "$3" 2>&1
}
t0=$SECONDS
build . /tmp/b-memtma "$OUT/build_new.log" &
P1=$!
build "$BASE" /tmp/b-memtma-base "$OUT/build_base.log" &
P2=$!
wait $P1 || { grep -m20 -B2 -A10 "error" "$OUT/build_new.log"; tail -20 "$OUT/build_new.log"; exit 1; }
wait $P2 || { grep -m20 -B2 -A10 "error" "$OUT/build_base.log"; echo "base build failed"; }
echo "builds: $((SECONDS - t0)) s"
t0=$SECONDS
/tmp/b-memtma/tests/helix_cuda_tests --gtest_filter='MlaDecodeBf16Cuda.*' > "$OUT/tests.log" 2>&1
echo "MLA tests rc $? ($((SECONDS - t0)) s)"
grep -E "^\[ *(OK|FAILED|PASSED) *\]|tests ran" "$OUT/tests.log" | tail -25
echo "worst rel_l2 out: $(grep -o 'rel_l2 out [^ ]*' "$OUT/tests.log" | awk '{print $3}' | sort -g | tail -1)"
for round in 1 2; do
  for v in base new; do
    bin=/tmp/b-memtma$([ $v = base ] && echo -base)/bench/bench_mla_decode_bf16
    [ -x "$bin" ] || continue
    echo "== $v round $round"
    "$bin" --heads 16 --batches 8 32 64 --contexts 16384 65536 131072 --skip-1m \
      --json "$OUT/bench_${v}_$round.json" 2>&1 | grep -E "bf16|fp8|copy" | tee "$OUT/bench_${v}_$round.txt"
    "$bin" --heads 16 --batches 1 --contexts 4096 --skip-1m 2>&1 | grep -E "bf16|fp8" | tee -a "$OUT/bench_${v}_$round.txt"
  done
done
