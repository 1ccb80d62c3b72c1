#!/usr/bin/env bash
# Builds the MLA test and bench on the dev machine for the device (static libstdc++, cudart and
# OpenBLAS: they need only the device's glibc), into mla16bin/ (not tracked), so a device call
# spends no time compiling. scripts/device/mla_mem_device.sh and mla_mem_final.sh use them.
#   bash scripts/device/mla_mem_prebuild.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-/tmp/b-mla16-pre}
mkdir -p "$B" mla16bin
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
CX="-std=c++20 -O2 -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
CU_SRC="mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 mla_decode_mem
  mla_decode_mem_combine mla_decode_sm90"
for f in $CU_SRC; do [ -n "${KEEP_OBJ:-}" ] && [ -f "$B/$f.o" ] && [ "$B/$f.o" -nt src/ops/cuda/$f.cu ] && continue; nvcc $CU -c src/ops/cuda/$f.cu -o "$B/$f.o"; done
for f in mla_decode matmul; do g++ $CX -c src/ops/cpu/$f.cpp -o "$B/$f.o"; done
g++ $CX -c tests/cuda/test_mla_decode_bf16.cpp -o "$B/test.o"
g++ $CX -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/bench.o"
OBJ=""; for f in $CU_SRC; do OBJ="$OBJ $B/$f.o"; done
L=/usr/lib/x86_64-linux-gnu
g++ -static-libstdc++ -static-libgcc -o mla16bin/bench_mla "$B/bench.o" $OBJ \
  -L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread
g++ -static-libstdc++ -static-libgcc -o mla16bin/test_mla "$B/test.o" $OBJ "$B/mla_decode.o" \
  "$B/matmul.o" $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran \
  -L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread
echo "mla16bin/test_mla, mla16bin/bench_mla"
