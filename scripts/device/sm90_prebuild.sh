#!/usr/bin/env bash
# Builds the MLA test and bench on the dev machine for the device (static libstdc++, cudart and
# OpenBLAS), into sm90bin/ (not tracked), for scripts/device/sm90_device.sh. VARIANTS="name:-DFLAG ..."
# also builds bench_mla_<name> with mla_decode_sm90.cu compiled with those flags (ablations).
#   bash scripts/device/sm90_prebuild.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${1:-/tmp/b-sm90-pre}
mkdir -p "$B" sm90bin
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
CCACHE=$(command -v ccache || true)
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
CX="-std=c++20 -O2 -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
CU_SRC="mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 mla_decode_mem
  mla_decode_mem_combine mla_decode_sm90 mla_kv_write"
newer() { [ -f "$1" ] && [ -z "$(find src bench tests -newer "$1" -name '*.c*' -o -newer "$1" -name '*.h' -o -newer "$1" -name '*.inc' | head -1)" ]; }
for f in $CU_SRC; do newer "$B/$f.o" || $CCACHE $NVCC $CU -c src/ops/cuda/$f.cu -o "$B/$f.o"; done
for f in mla_decode matmul kv_fp8; do newer "$B/$f.o" || g++ $CX -c src/ops/cpu/$f.cpp -o "$B/$f.o"; done
newer "$B/float_codec.o" || g++ $CX -c src/core/float_codec.cpp -o "$B/float_codec.o"
newer "$B/test.o" || g++ $CX -c tests/cuda/test_mla_decode_bf16.cpp -o "$B/test.o"
newer "$B/bench.o" || g++ $CX -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/bench.o"
OBJ=""; for f in $CU_SRC; do OBJ="$OBJ $B/$f.o"; done
L=/usr/lib/x86_64-linux-gnu
LINK="-L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread"
g++ -static-libstdc++ -static-libgcc -o sm90bin/bench_mla "$B/bench.o" $OBJ $LINK
g++ -static-libstdc++ -static-libgcc -o sm90bin/test_mla "$B/test.o" $OBJ "$B/mla_decode.o" "$B/kv_fp8.o" "$B/float_codec.o" \
  "$B/matmul.o" $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran $LINK
rm -f sm90bin/bench_mla_*
for v in ${VARIANTS:-}; do
  name=${v%%:*}; flags=${v#*:}
  $CCACHE $NVCC $CU ${flags//,/ } -c src/ops/cuda/mla_decode_sm90.cu -o "$B/sm90_$name.o"
  g++ -static-libstdc++ -static-libgcc -o "sm90bin/bench_mla_$name" "$B/bench.o" \
    ${OBJ/$B\/mla_decode_sm90.o/$B/sm90_$name.o} $LINK
done
strip sm90bin/*
ls -la sm90bin
