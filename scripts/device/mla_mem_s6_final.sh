#!/usr/bin/env bash
# Session 6 (h16), the final device call: the GPU tests of this tree and the before/after bench.
# Carried in build-bin/ (made on the dev machine): cuda_tests.gz and backend_ops.gz (this tree's
# helix_cuda_tests and test_backend_ops, from `ninja -C build-cuda`; dynamically linked: if the
# device lacks a library they are rebuilt here), test_mla.gz and the bench variants of
# scripts/device/mla_mem_s6_build.sh. Then scripts/device/mla_mem_s6_run.sh with the caller's
# FULL / VARS / SHAPE / ROUNDS. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
V=/tmp/mla-mem-h16; mkdir -p $V
for f in build-bin/*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > $V/$n; chmod +x $V/$n; done
# the binaries look for fixtures under the dev machine's source dir
mkdir -p /work/wt 2> /dev/null && ln -sfn "$PWD" /work/wt/h16 2> /dev/null
t0=$SECONDS
if ldd $V/cuda_tests $V/backend_ops | grep -q "not found"; then
  echo "carried test binaries miss libraries: building them here"
  cmake -S . -B /tmp/b-h16 -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_BENCH=OFF \
    -DHELIX_SANITIZE_TESTS=OFF > "$OUT/cmake.log" 2>&1 &&
    ninja -C /tmp/b-h16 -j16 helix_cuda_tests test_backend_ops > "$OUT/build.log" 2>&1 ||
    { tail -20 "$OUT/build.log"; exit 1; }
  cp /tmp/b-h16/tests/helix_cuda_tests $V/cuda_tests; cp /tmp/b-h16/tests/test_backend_ops $V/backend_ops
fi
timeout 300 $V/cuda_tests --gtest_filter='*Mla*' > "$OUT/cuda_tests_mla.log" 2>&1
echo "helix_cuda_tests *Mla* rc=$? ($((SECONDS - t0)) s)"
grep -E "^\[  (PASSED|FAILED) |^\[==========\] [0-9]+ tests" "$OUT/cuda_tests_mla.log" | tail -3
timeout 300 $V/backend_ops > "$OUT/backend_ops.log" 2>&1
echo "test_backend_ops rc=$? ($((SECONDS - t0)) s)"
grep -E "^\[  (PASSED|FAILED) |^\[==========\] [0-9]+ tests" "$OUT/backend_ops.log" | tail -3
OUT=$OUT bash scripts/device/mla_mem_s6_run.sh
