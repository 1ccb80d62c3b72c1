#!/usr/bin/env bash
# Session 6 (h128): builds the MLA bf16 test and bench binaries on the dev machine for the device
# (static libstdc++ and cudart, OpenBLAS static), from the tree given (default: this one), into
# <out-dir>/ as test_mla and bench_mla (gzipped there by the caller). Like sm90_prebuild.sh, plus
# the bench's L2 flush (bench_flush.cu, session 6). VARIANTS="name:-DFLAG,-DFLAG2 ..." also builds
# bench_mla_<name> with mla_decode_sm90.cu compiled with those flags.
#   [VARIANTS=...] bash scripts/device/h128_prebuild.sh <tree> <build-dir> <out-dir>
set -euo pipefail
T=$(cd "${1:-.}" && pwd); B=$2; O=$3
mkdir -p "$B" "$O"
cd "$T"
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
CCACHE=$(command -v ccache || true)
export CCACHE_BASEDIR=/
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
CX="-std=c++20 -O2 -Isrc -Ibench -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
CU_SRC="mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 mla_decode_mem
  mla_decode_mem_combine mla_decode_sm90 mla_kv_write mla_decode_lat mla_decode_tail"
for f in $CU_SRC; do [ -f src/ops/cuda/$f.cu ] && $CCACHE $NVCC $CU -c src/ops/cuda/$f.cu -o "$B/$f.o"; done
$CCACHE $NVCC $CU -c bench/bench_flush.cu -o "$B/bench_flush.o"
for f in mla_decode matmul kv_fp8; do $CCACHE g++ $CX -c src/ops/cpu/$f.cpp -o "$B/$f.o"; done
$CCACHE g++ $CX -c src/core/float_codec.cpp -o "$B/float_codec.o"
$CCACHE g++ $CX -c tests/cuda/test_mla_decode_bf16.cpp -o "$B/test.o"
$CCACHE g++ $CX -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/bench.o"
OBJ=""; for f in $CU_SRC; do [ -f "$B/$f.o" ] && OBJ="$OBJ $B/$f.o"; done
L=/usr/lib/x86_64-linux-gnu
LINK="-L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread"
g++ -static-libstdc++ -static-libgcc -o "$O/bench_mla" "$B/bench.o" "$B/bench_flush.o" $OBJ $LINK
g++ -static-libstdc++ -static-libgcc -o "$O/test_mla" "$B/test.o" $OBJ "$B/mla_decode.o" "$B/kv_fp8.o" "$B/float_codec.o" \
  "$B/matmul.o" $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran $LINK
for v in ${VARIANTS:-}; do
  name=${v%%:*}; flags=${v#*:}
  $CCACHE $NVCC $CU ${flags//,/ } -c src/ops/cuda/mla_decode_sm90.cu -o "$B/sm90_$name.o"
  g++ -static-libstdc++ -static-libgcc -o "$O/bench_mla_$name" "$B/bench.o" "$B/bench_flush.o" \
    ${OBJ/$B\/mla_decode_sm90.o/$B/sm90_$name.o} $LINK
  strip "$O/bench_mla_$name"
done
strip "$O"/bench_mla "$O"/test_mla
ls -la "$O"
