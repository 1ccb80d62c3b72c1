#!/usr/bin/env bash
# Builds bench_mla variants of the memory-bound MLA kernel on the dev machine (for one device call
# that times them all): each VARIANT is "name:nvcc-flags" (e.g. "s8:-DMLA_MEM_FP8_STAGES=8");
# only mla_decode_mem.cu is rebuilt per variant, the other objects come from
# scripts/device/mla_mem_prebuild.sh's build dir. Output: mla16bin/var/bench_<name>.gz (stripped).
#   bash scripts/device/mla_mem_variants.sh "v0:" "s8:-DMLA_MEM_FP8_STAGES=8" ...
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${B:-/tmp/b-mem-pre}
mkdir -p "$B/var" mla16bin/var
CU="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc"
OBJ=""
for f in mla_decode_bf16 mla_decode_bf16_l512_r64 mla_decode_bf16_l64_r16 mla_decode_bf16_l32_r16 \
  mla_decode_sm90; do OBJ="$OBJ $B/$f.o"; done
for v in "$@"; do
  name=${v%%:*}; flags=${v#*:}
  # shellcheck disable=SC2086
  nvcc $CU $flags -c src/ops/cuda/mla_decode_mem.cu -o "$B/var/mem_$name.o"
  # shellcheck disable=SC2086
  nvcc $CU $flags -c src/ops/cuda/mla_decode_mem_combine.cu -o "$B/var/comb_$name.o"
  # shellcheck disable=SC2086
  g++ -static-libstdc++ -static-libgcc -o "$B/var/bench_$name" "$B/bench.o" $OBJ \
    "$B/var/mem_$name.o" "$B/var/comb_$name.o" -L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread
  strip "$B/var/bench_$name"
  gzip -c "$B/var/bench_$name" > "mla16bin/var/bench_$name.gz"
  echo "built $name ($flags)"
done
