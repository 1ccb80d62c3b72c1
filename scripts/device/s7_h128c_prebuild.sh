#!/usr/bin/env bash
# Session 7 (h128c): builds the MLA kernel test and bench of a source tree on the dev machine for
# the device (static libstdc++ / cudart / OpenBLAS), as s7_lat_prebuild.sh, with the test's case
# harness sources (test_mla_decode_bf16*.cpp, mla_bf16_case.cpp).
#   bash scripts/device/s7_h128c_prebuild.sh <src-tree> <obj-dir> <out-dir> [bench|test|both]
set -euo pipefail
SRC=$(cd "$1" && pwd)
B=$2
O=$3
WHAT=${4:-both}
mkdir -p "$B" "$O"
cd "$SRC"
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
CX="-std=c++20 -O2 -Isrc -Itests -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
CU_SRC=""
for f in mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 \
  mla_decode_mem mla_decode_mem_combine mla_decode_sm90 mla_kv_write mla_decode_lat mla_decode_cluster mla_decode_tail; do
  [ -f src/ops/cuda/$f.cu ] && CU_SRC="$CU_SRC $f"
done
CC=${CCACHE:-ccache}
export CCACHE_BASEDIR=/
for f in $CU_SRC; do $CC nvcc $CU -c src/ops/cuda/$f.cu -o "$B/$f.o"; done
OBJ=""
for f in $CU_SRC; do OBJ="$OBJ $B/$f.o"; done
L=/usr/lib/x86_64-linux-gnu
LINK="-L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread"
if [ "$WHAT" != test ]; then
  $CC g++ $CX -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/bench.o"
  $CC nvcc $CU -c bench/bench_flush.cu -o "$B/bench_flush.o"
  g++ -static-libstdc++ -static-libgcc -o "$O/bench_mla" "$B/bench.o" "$B/bench_flush.o" $OBJ $LINK
  strip "$O/bench_mla"
fi
if [ "$WHAT" != bench ]; then
  CPU=""
  for f in src/ops/cpu/mla_decode.cpp src/ops/cpu/matmul.cpp src/ops/cpu/kv_fp8.cpp src/core/float_codec.cpp \
    tests/cuda/mla_bf16_case.cpp tests/cuda/test_mla_decode_bf16.cpp tests/cuda/test_mla_decode_bf16_kernels.cpp; do
    [ -f "$f" ] || continue
    $CC g++ $CX -c "$f" -o "$B/$(basename "$f" .cpp).o"
    CPU="$CPU $B/$(basename "$f" .cpp).o"
  done
  g++ -static-libstdc++ -static-libgcc -o "$O/test_mla" $OBJ $CPU $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran $LINK
  strip "$O/test_mla"
fi
ls -la "$O"
