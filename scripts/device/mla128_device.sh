#!/usr/bin/env bash
# One device call for the Hopper MLA kernel at H >= 64 (issue 8, mla_decode_sm90.cuh): the MLA
# CUDA tests, then the bench at 128 heads (and, TORCH=1, the PyTorch eager baseline and the
# measured GEMM rate in the same call). Runs binaries built on this machine and carried in
# $BIN (helix_cuda_tests, bench_mla_decode_bf16) when they load there, else builds them.
#   OUT=dir MODE=quick|full|none TORCH=0|1 KERNELS="auto" BIN=dir bash scripts/device/mla128_device.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
MODE=${MODE:-quick}
BIN=${BIN:-bin}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
NEED="$BIN/bench_mla_decode_bf16"; [ "${TESTS:-1}" = 1 ] && NEED="$NEED $BIN/helix_cuda_tests"
if ! ls $NEED > /dev/null 2>&1 || ldd $NEED | grep -q "not found"; then
  echo "building on the device"
  . scripts/devdeps_env.sh
  BIN=/tmp/b-mla128
  cmake -S . -B "$BIN" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_MPI=OFF > "$OUT/cmake.log" 2>&1
  ninja -C "$BIN" -j16 helix_cuda_tests bench_mla_decode_bf16 > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  BIN_T=$BIN/tests; BIN_B=$BIN/bench
else
  BIN_T=$BIN; BIN_B=$BIN
fi
if [ "${TESTS:-1}" = 1 ]; then
  timeout 300 "$BIN_T/helix_cuda_tests" --gtest_filter="${FILTER:-MlaDecodeBf16*}" > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"
  grep -E "case:|rel_l2|FAILED|PASSED|Failure|error" "$OUT/tests.log" | grep -B1 -E "FAILED|Failure|error|PASSED" | head -40
  grep -A2 "sm90" "$OUT/tests.log" | grep rel_l2 | head -30
fi
[ "$MODE" = none ] && exit 0
Q=""; [ "$MODE" = quick ] && Q="--quick"
GEMM=0
if [ "${TORCH:-0}" = 1 ]; then
  python3 bench/mla_torch_baseline.py --heads ${HEADS:-128} --json "$OUT/mla_torch_baseline.json" $Q > "$OUT/torch.log" 2>&1
  GEMM=$(python3 -c "import json;print(json.load(open('$OUT/mla_torch_baseline.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
  head -3 "$OUT/torch.log"
fi
for k in ${KERNELS:-auto}; do
  "$BIN_B/bench_mla_decode_bf16" $Q --heads ${HEADS:-128} --kernel $k --gemm-tflops "$GEMM" \
    --json "$OUT/bench_mla_decode_bf16_$k.json" > "$OUT/bench_$k.log" 2>&1
  echo "== bench --kernel $k rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ |device|GEMM|copy" "$OUT/bench_$k.log"
done
# Variants built here with other compile-time options (bench_mla_decode_bf16_<name>), bf16 rows.
for v in "$BIN_B"/bench_mla_decode_bf16_*; do
  [ -x "$v" ] || continue
  "$v" $Q --heads ${HEADS:-128} --gemm-tflops "$GEMM" --json "$OUT/$(basename "$v").json" \
    > "$OUT/$(basename "$v").log" 2>&1
  echo "== variant $(basename "$v") rc=$?"; grep -E "^ +[0-9]+ +[0-9]+ .* bf16 " "$OUT/$(basename "$v").log"
done
