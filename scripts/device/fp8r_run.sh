#!/usr/bin/env bash
# Session 6 (helper fp8r): one device call on binaries built on the dev machine (gzipped in
# fp8bin/: bench_mla = this branch, bench_mla_base = main, by scripts/device/fp8h_prebuild.sh;
# tbin/: this branch's cmake-built helix_cuda_tests and test_backend_ops, tbin/lib.tgz the shared
# libraries they link that the device may lack). Tests first, then both benches at 128 heads,
# alternating, ROUNDS rounds
# (BINS: which bench binaries; TESTS=0 skips the tests).   OUT=dir [ROUNDS=2] [BINS=...] bash scripts/device/fp8r_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/fr
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for f in fp8bin/*.gz tbin/*.gz; do gunzip -c "$f" > /tmp/fr/$(basename "$f" .gz); chmod +x /tmp/fr/$(basename "$f" .gz); done
mkdir -p /tmp/fr/lib; tar -xzf tbin/lib.tgz -C /tmp/fr/lib
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:/tmp/fr/lib  # only for libraries the device lacks
ldd /tmp/fr/helix_cuda_tests /tmp/fr/test_backend_ops | grep "not found"
mkdir -p /work/wt; ln -sfn "$(cd ../.. && pwd)" /work/wt/fp8r  # HELIX_SOURCE_DIR (fixtures): the repo root (run from .dev/fp8r)
if [ "${TESTS:-1}" = 1 ]; then
timeout 300 /tmp/fr/helix_cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
echo "== helix_cuda_tests *Mla* rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]|FAILED" "$OUT/cuda_tests_mla.log" | head
python3 - "$OUT/cuda_tests_mla.log" <<'PY'
import re, sys
v = [float(x) for x in re.findall(r"rel_l2 out ([0-9.e+-]+)", open(sys.argv[1]).read())]
print(f"cases {len(v)}, worst rel L2 of out {max(v):.2e}" if v else "no rel_l2 lines")
PY
timeout 300 /tmp/fr/test_backend_ops > "$OUT/backend_ops.log" 2>&1
echo "== test_backend_ops rc=$?"; grep -E "^\[  (PASSED|FAILED)|^\[==========\]" "$OUT/backend_ops.log"
fi
S="--heads 128 --batches 8 32 --contexts 16384 65536 --skip-1m"
for r in $(seq 1 "${ROUNDS:-2}"); do
  for n in ${BINS:-bench_mla_base bench_mla}; do
    timeout 200 /tmp/fr/$n $S --json "$OUT/$n.$r.json" > "$OUT/$n.$r.log" 2>&1
    echo "== $n rep $r rc=$?"; grep -E "^ +128 ${KV:-}" "$OUT/$n.$r.log" | cut -c1-110
  done
done
