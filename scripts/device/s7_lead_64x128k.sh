#!/usr/bin/env bash
# Session 7 (lead): 128 heads at 64 x 128K (and 64 x 64K), this tree against a copy of main 2841afc
# carried in .dev/base6, alternating, queued timing.  OUT=dir bash scripts/device/s7_lead_64x128k.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
build() {  # $1 = tree, $2 = build dir
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_BENCH=ON -DHELIX_SANITIZE_TESTS=OFF \
    > "$OUT/cmake_$(basename "$2").log" 2>&1 && ninja -C "$2" -j16 bench_mla_decode_bf16 > "$OUT/build_$(basename "$2").log" 2>&1
}
. scripts/devdeps_env.sh
build . /tmp/b-now & build .dev/base6 /tmp/b-base6 & wait
echo "built in $SECONDS s"
for r in 1 2; do
  for b in b-base6 b-now; do
    echo "== $b round $r"
    /tmp/$b/bench/bench_mla_decode_bf16 --heads 128 --batches 64 --contexts 65536 131072 --skip-1m 2>&1 | grep -E "^ +128 .*bf16"
  done
done
