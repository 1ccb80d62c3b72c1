#!/usr/bin/env bash
# Session 7 (lat): builds the MLA kernel test and bench of a source tree on the dev machine for the
# device (static libstdc++ / cudart / OpenBLAS), as lat_prebuild.sh, with every mla_decode_lat*
# and mla_decode_cluster* source that exists; with TRACE=1 also the cluster kernel's stamp driver.
#   bash scripts/device/s7_lat_prebuild.sh <src-tree> <obj-dir> <out-dir> [bench|test|both]
set -euo pipefail
SRC=$(cd "$1" && pwd)
B=$2
O=$3
WHAT=${4:-both}
mkdir -p "$B" "$O"
cd "$SRC"
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
CX="-std=c++20 -O2 -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
CU_SRC="mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16
  mla_decode_mem mla_decode_mem_combine mla_decode_sm90 mla_kv_write"
for f in src/ops/cuda/mla_decode_lat*.cu src/ops/cuda/mla_decode_cluster*.cu src/ops/cuda/mla_decode_tail*.cu; do
  [ -f "$f" ] && CU_SRC="$CU_SRC $(basename "$f" .cu)"
done
CC=${CCACHE:-ccache}
for f in $CU_SRC; do $CC nvcc $CU -c src/ops/cuda/$f.cu -o "$B/$f.o" & done
wait
OBJ=""
for f in $CU_SRC; do OBJ="$OBJ $B/$f.o"; done
L=/usr/lib/x86_64-linux-gnu
LINK="-L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread"
if [ "$WHAT" != test ]; then
  $CC g++ $CX -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/bench.o"
  $CC nvcc $CU -c bench/bench_flush.cu -o "$B/bench_flush.o"
  g++ -static-libstdc++ -static-libgcc -o "$O/bench_mla" "$B/bench.o" "$B/bench_flush.o" $OBJ $LINK
fi
if [ "$WHAT" != bench ]; then
  CPU=""
  for f in src/ops/cpu/mla_decode.cpp src/ops/cpu/matmul.cpp src/ops/cpu/kv_fp8.cpp src/core/float_codec.cpp; do
    [ -f "$f" ] || continue
    $CC g++ $CX -c "$f" -o "$B/$(basename "$f" .cpp).o"
    CPU="$CPU $B/$(basename "$f" .cpp).o"
  done
  $CC g++ $CX -c tests/cuda/test_mla_decode_bf16.cpp -o "$B/test.o"
  g++ -static-libstdc++ -static-libgcc -o "$O/test_mla" "$B/test.o" $OBJ $CPU $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran $LINK
fi
if [ "${TRACE:-0}" = 1 ]; then
  # the stamp driver over diagnostic builds of the kernel: cp.async (default) or bulk copies, each
  # with and without the tile loop's compute
  for v in "" bulk nc bulk_nc; do
    D=""
    case $v in *bulk*) D="$D -DMLA_CLUSTER_BULK" ;; esac
    case $v in *nc) D="$D -DMLA_CLUSTER_NOCOMPUTE" ;; esac
    $CC nvcc $CU -DMLA_CLUSTER_TRACE $D scripts/device/s7_cluster_trace.cu -o "$O/cluster_trace${v:+_$v}" \
      -Xcompiler -static-libstdc++ -Xcompiler -static-libgcc &
  done
  wait
  $CC nvcc $CU scripts/device/s7_launch_probe.cu -o "$O/launch_probe" -Xcompiler -static-libstdc++ -Xcompiler -static-libgcc
fi
ls -la "$O"
