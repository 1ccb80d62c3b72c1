#!/usr/bin/env bash
# Session 6 (fp8): builds on the dev machine, statically (static libstdc++/cudart/OpenBLAS: they
# need only the device's glibc), the MLA test binary of this tree and the 16-head bench of each
# source tree named, so the device call spends no time compiling.
#   OUTB=build-bin bash scripts/device/fp8_s6_build.sh name=SRC_TREE[%nvcc-flags] ...
# (SRC_TREE: a checkout's root, e.g. a `git archive` of main; the flags go to the mem kernel's
# compile). Output: $OUTB/bench_<name>.gz per tree, $OUTB/test_mla_<name>.gz for this tree (.).
# Objects go to build-s6/<name>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUTB=${OUTB:-build-bin}; mkdir -p "$OUTB"
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo"
CX="-std=c++20 -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
LNK="-L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread"
# The kernels other than the mem kernel are built once from this tree: the trees named must hold
# the same sources for them (checked).
COMMON="mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 mla_decode_sm90 mla_kv_write mla_decode_lat"
mkdir -p build-s6/common
for f in $COMMON; do
  o=build-s6/common/$f.o
  [ -f "$o" ] && [ "$o" -nt src/ops/cuda/$f.cu ] || { nvcc $CU -Isrc -c src/ops/cuda/$f.cu -o "$o" & }
done
wait
build_tree() {  # name src-root nvcc-flags -> $B/*.o
  local name=$1 root=$2 flags=$3; B=build-s6/$name; mkdir -p "$B"
  for f in $COMMON; do
    cmp -s "$root/src/ops/cuda/$f.cu" src/ops/cuda/$f.cu || { echo "$root: $f.cu differs"; exit 1; }
  done
  for f in mla_decode_mem mla_decode_mem_combine; do
    nvcc $CU $flags -I"$root/src" -c "$root/src/ops/cuda/$f.cu" -o "$B/$f.o" &
  done
  nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -c "$root/bench/bench_flush.cu" -o "$B/flush.o" &
  g++ $CX -I"$root/src" -I"$root/bench" -DFMT_HEADER_ONLY -c "$root/bench/bench_mla_decode_bf16.cpp" -o "$B/bench.o" &
  wait
  OBJ="$(for f in $COMMON; do echo build-s6/common/$f.o; done) $B/mla_decode_mem.o $B/mla_decode_mem_combine.o"
}
for v in "$@"; do
  name=${v%%=*}; root=${v#*=}; flags=""
  [[ $root == *%* ]] && { flags=${root#*%}; root=${root%%%*}; }
  build_tree "$name" "$root" "$flags"
  # shellcheck disable=SC2086
  g++ -static-libstdc++ -static-libgcc -o "$B/bench" "$B/bench.o" "$B/flush.o" \
    $OBJ $LNK
  strip "$B/bench"; gzip -c "$B/bench" > "$OUTB/bench_$name.gz"; echo "built bench_$name"
  if [ "$root" = . ] && [ "${TEST:-1}" = 1 ]; then
    CPU_SRC="src/ops/cpu/mla_decode.cpp src/ops/cpu/matmul.cpp src/ops/cpu/kv_fp8.cpp src/core/float_codec.cpp"
    CPU_OBJ=""
    for f in $CPU_SRC; do
      [ -f "$f" ] || continue
      o="$B/$(basename "$f" .cpp).o"; CPU_OBJ="$CPU_OBJ $o"
      g++ $CX -Isrc -c "$f" -o "$o" &
    done
    g++ $CX -Isrc -Itests -Itests/cuda -c tests/cuda/test_mla_decode_bf16.cpp -o "$B/test.o" &
    wait
    L=/usr/lib/x86_64-linux-gnu
    # shellcheck disable=SC2046,SC2086
    g++ -static-libstdc++ -static-libgcc -o "$B/test_mla" "$B/test.o" \
      $OBJ $CPU_OBJ \
      $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran $LNK
    strip "$B/test_mla"; gzip -c "$B/test_mla" > "$OUTB/test_mla_$name.gz"; echo "built test_mla_$name"
  fi
done
