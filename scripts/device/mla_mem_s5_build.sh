#!/usr/bin/env bash
# Builds, on the dev machine, the memory-bound MLA kernel's test binary and bench variants for one
# device call (static libstdc++/cudart/OpenBLAS: they need only the device's glibc), so the device
# spends no time compiling. Objects of the other MLA kernels are built once into $B.
#   B=build-pre OUTB=build-bin bash scripts/device/mla_mem_s5_build.sh [name:nvcc-flags ...]
# A variant's flags may name a patch to apply first: "st:PATCH=scripts/device/x.patch -DFOO".
# Output: $OUTB/test_mla.gz (this tree), $OUTB/bench_<name>.gz per variant.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build-pre}; OUTB=${OUTB:-build-bin}
mkdir -p "$B" "$OUTB"
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
CX="-std=c++20 -O2 -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
OTHER="mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 mla_decode_sm90"
[ -f src/ops/cuda/mla_kv_write.cu ] && OTHER="$OTHER mla_kv_write"  # its own file since session 5
for f in $OTHER; do
  [ -f "$B/$f.o" ] && [ "$B/$f.o" -nt src/ops/cuda/$f.cu ] || nvcc $CU -c src/ops/cuda/$f.cu -o "$B/$f.o"
done
# the CPU reference (the test's ground truth) and the bf16 / e4m3 codec it uses
CPU_SRC="src/ops/cpu/mla_decode.cpp src/ops/cpu/matmul.cpp"
for f in src/ops/cpu/kv_fp8.cpp src/core/float_codec.cpp; do [ -f $f ] && CPU_SRC="$CPU_SRC $f"; done
CPU_OBJ=""
for f in $CPU_SRC; do
  o="$B/$(basename "$f" .cpp).o"; CPU_OBJ="$CPU_OBJ $o"
  [ -f "$o" ] || g++ $CX -c "$f" -o "$o"
done
[ -f "$B/bench.o" ] || g++ $CX -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/bench.o"
OBJ=""; for f in $OTHER; do OBJ="$OBJ $B/$f.o"; done
LNK="-L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread"
if [ "${TEST:-1}" = 1 ]; then
  nvcc $CU -c src/ops/cuda/mla_decode_mem.cu -o "$B/mem.o"
  nvcc $CU -c src/ops/cuda/mla_decode_mem_combine.cu -o "$B/comb.o"
  g++ $CX -c tests/cuda/test_mla_decode_bf16.cpp -o "$B/test.o"
  L=/usr/lib/x86_64-linux-gnu
  # shellcheck disable=SC2086
  g++ -static-libstdc++ -static-libgcc -o "$B/test_mla" "$B/test.o" $OBJ "$B/mem.o" "$B/comb.o" \
    $CPU_OBJ $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran $LNK
  strip "$B/test_mla"; gzip -c "$B/test_mla" > "$OUTB/test_mla.gz"; echo "built test_mla"
fi
for v in "$@"; do
  name=${v%%:*}; flags=${v#*:}; src=src
  if [[ $flags == PATCH=* ]]; then
    p=${flags%% *}; p=${p#PATCH=}; flags=${flags#PATCH=$p}
    rm -rf "$B/src_$name"; cp -r src "$B/src_$name"; patch -s -d "$B/src_$name" -p2 < "$p"; src="$B/src_$name"
  fi
  # shellcheck disable=SC2086
  nvcc ${CU/-Isrc/-I$src} $flags -c $src/ops/cuda/mla_decode_mem.cu -o "$B/mem_$name.o"
  # shellcheck disable=SC2086
  nvcc ${CU/-Isrc/-I$src} $flags -c $src/ops/cuda/mla_decode_mem_combine.cu -o "$B/comb_$name.o"
  # shellcheck disable=SC2086
  g++ -static-libstdc++ -static-libgcc -o "$B/bench_$name" "$B/bench.o" $OBJ "$B/mem_$name.o" \
    "$B/comb_$name.o" $LNK
  strip "$B/bench_$name"; gzip -c "$B/bench_$name" > "$OUTB/bench_$name.gz"
  echo "built $name ($flags)"
done
