#!/usr/bin/env bash
# One device call for the memory-bound MLA decode (issue 8, <= 32 heads): takes the binaries in
# $PRE (scripts/device/mla_mem_prebuild.sh, built on the dev machine) when they run there, else builds only
# the MLA test and bench with nvcc/g++ directly (no full CMake build); runs the MLA tests, the
# PyTorch eager baseline and the bench; results under $OUT.
#   MODE=quick|full  TORCH=0|1  FILTER=gtest filter  BQ="extra bench flags" (e.g. --heads 16)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${BUILD:-/tmp/b-mla16}
mkdir -p "$OUT" "$B"
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
CX="-std=c++20 -O2 -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
t0=$SECONDS
PRE=${PRE:-mla16bin}  # binaries built on the dev machine (static libstdc++/cudart), if they run here
if [ -x $PRE/test_mla ] && $PRE/test_mla --gtest_list_tests > /dev/null 2>&1 && $PRE/bench_mla --help > /dev/null 2>&1; then
  cp $PRE/test_mla $PRE/bench_mla $B/; echo "prebuilt binaries"
else
pids=()
for f in mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 mla_decode_mem mla_decode_mem_combine; do
  $NVCC $CU -c src/ops/cuda/$f.cu -o $B/$f.o > $B/$f.log 2>&1 & pids+=($!)
done
for f in mla_decode matmul; do g++ $CX -c src/ops/cpu/$f.cpp -o $B/$f.o > $B/$f.log 2>&1 & pids+=($!); done
g++ $CX -c tests/cuda/test_mla_decode_bf16.cpp -o $B/test.o > $B/test.log 2>&1 & pids+=($!)
g++ $CX -c bench/bench_mla_decode_bf16.cpp -o $B/bench.o > $B/bench.log 2>&1 & pids+=($!)
fail=0; for p in "${pids[@]}"; do wait $p || fail=1; done
if [ $fail = 1 ]; then cat $B/*.log | grep -B2 -A5 error | head -40; exit 1; fi
OBJ="$B/mla_decode_bf16.o $B/mla_decode_bf16_l512_r64.o $B/mla_decode_bf16_l64_r16.o $B/mla_decode_bf16_l32_r16.o $B/mla_decode_mem.o $B/mla_decode_mem_combine.o"
LIBS="-L/usr/local/cuda/lib64 -lcudart -lpthread"
g++ -o $B/test_mla $B/test.o $OBJ $B/mla_decode.o $B/matmul.o -lgtest -lgtest_main -lopenblas $LIBS || exit 1
g++ -o $B/bench_mla $B/bench.o $OBJ -lfmt $LIBS || exit 1
fi
echo "build: $((SECONDS - t0)) s"
[ "${BUILD_ONLY:-0}" = 1 ] && exit 0
timeout 300 $B/test_mla --gtest_filter="${FILTER:-*}" > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; grep -E "rel_l2|FAILED|Failure|error|PASSED|Expected|Which|actual" "$OUT/tests.log" | head -80
Q=""; [ "${MODE:-full}" = quick ] && Q="--quick"
GEMM=0
if [ "${TORCH:-1}" = 1 ]; then
  python3 bench/mla_torch_baseline.py --json "$OUT/mla_torch_baseline.json" ${TQ:-} > "$OUT/torch.log" 2>&1
  GEMM=$(python3 -c "import json;print(json.load(open('$OUT/mla_torch_baseline.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
  head -3 "$OUT/torch.log"
fi
timeout 400 $B/bench_mla $Q ${BQ:-} --gemm-tflops "$GEMM" --json "$OUT/bench_mla_decode_bf16.json" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; cat "$OUT/bench.log"
