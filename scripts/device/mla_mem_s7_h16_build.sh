#!/usr/bin/env bash
# Session 7 (h16): builds, on the dev machine, the MLA kernel test binary and bench variants of two
# source trees (this one, "mine", and a base, e.g. main's, whose Args/planner may differ: every MLA
# object is built per tree) as static binaries, gzipped, so the device spends no time compiling.
#   BASE=/path/to/base/src B=build-pre OUTB=bin-h16 bash scripts/device/mla_mem_s7_h16_build.sh \
#     name:TREE[:PATCH[:nvcc-flags]] ...      (TREE: mine or base)
# Output: $OUTB/test_mla.gz (mine, TEST=1), $OUTB/bench_<name>.gz per variant.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-build-pre}; OUTB=${OUTB:-bin-h16}; BASE=${BASE:?base src dir}
mkdir -p "$B" "$OUTB"
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo"
CX="-std=c++20 -O2 -I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/local/cuda/include -DHELIX_HAVE_CUDA=1"
OTHER="mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 mla_decode_sm90 mla_kv_write mla_decode_lat"
# objects of the MLA files other than the mem kernel, per tree ($1: src dir, $2: obj dir)
build_other() {
  mkdir -p "$2"
  local pids=()
  for f in $OTHER; do
    if [ ! -f "$2/$f.o" ] || [ "$2/$f.o" -ot "$1/ops/cuda/$f.cu" ]; then
      nvcc $CU -I"$1" -c "$1/ops/cuda/$f.cu" -o "$2/$f.o" &
      pids+=($!)
      if [ ${#pids[@]} -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    fi
  done
  for p in "${pids[@]}"; do wait "$p"; done
  [ -f "$2/flush.o" ] || nvcc $CU -c bench/bench_flush.cu -o "$2/flush.o"
}
build_other "$PWD/src" "$B/mine"
build_other "$BASE" "$B/base"
CPU_SRC="src/ops/cpu/mla_decode.cpp src/ops/cpu/matmul.cpp src/ops/cpu/kv_fp8.cpp src/core/float_codec.cpp"
CPU_OBJ=""
for f in $CPU_SRC; do
  o="$B/$(basename "$f" .cpp).o"; CPU_OBJ="$CPU_OBJ $o"
  [ -f "$o" ] || g++ $CX -Isrc -c "$f" -o "$o"
done
# the bench against each tree's public header (MlaPlan may differ)
[ -f "$B/mine/bench.o" ] || g++ $CX -Isrc -Ibench -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/mine/bench.o"
[ -f "$B/base/bench.o" ] || g++ $CX -I"$BASE" -Ibench -DFMT_HEADER_ONLY -c bench/bench_mla_decode_bf16.cpp -o "$B/base/bench.o"
LNK="-L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread"
objs() { local o=""; for f in $OTHER; do o="$o $1/$f.o"; done; echo "$o"; }
if [ "${TEST:-1}" = 1 ]; then
  nvcc $CU -Isrc -c src/ops/cuda/mla_decode_mem.cu -o "$B/mine/mem.o"
  nvcc $CU -Isrc -c src/ops/cuda/mla_decode_mem_combine.cu -o "$B/mine/comb.o"
  g++ $CX -Isrc -Itests/cuda -Itests -c tests/cuda/test_mla_decode_bf16.cpp -o "$B/test.o"
  L=/usr/lib/x86_64-linux-gnu
  # shellcheck disable=SC2046,SC2086
  g++ -static-libstdc++ -static-libgcc -o "$B/test_mla" "$B/test.o" $(objs "$B/mine") "$B/mine/mem.o" \
    "$B/mine/comb.o" $CPU_OBJ $L/libgtest.a $L/libgtest_main.a $L/libopenblas.a -lgfortran $LNK
  strip "$B/test_mla"; gzip -c "$B/test_mla" > "$OUTB/test_mla.gz"; echo "built test_mla"
fi
for v in "$@"; do
  IFS=: read -r name tree patch flags <<< "$v"
  if [ "$tree" = base ]; then base="$BASE"; od="$B/base"; else base="$PWD/src"; od="$B/mine"; fi
  src="$base"
  if [ -n "$patch" ]; then
    rm -rf "$B/src_$name"; cp -r "$base" "$B/src_$name"; patch -s -d "$B/src_$name" -p2 < "$patch"
    src="$B/src_$name"
  fi
  # shellcheck disable=SC2086
  nvcc $CU -I"$src" $flags -c "$src/ops/cuda/mla_decode_mem.cu" -o "$B/mem_$name.o" &
  # shellcheck disable=SC2086
  nvcc $CU -I"$src" $flags -c "$src/ops/cuda/mla_decode_mem_combine.cu" -o "$B/comb_$name.o"
  wait
  # shellcheck disable=SC2046,SC2086
  g++ -static-libstdc++ -static-libgcc -o "$B/bench_$name" "$od/bench.o" $(objs "$od") "$od/flush.o" \
    "$B/mem_$name.o" "$B/comb_$name.o" $LNK
  strip "$B/bench_$name"; gzip -c "$B/bench_$name" > "$OUTB/bench_$name.gz"
  echo "built $name ($tree $patch $flags)"
done
