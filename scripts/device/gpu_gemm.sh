#!/usr/bin/env bash
# On the GPU machine, one call: the tensor-core decode GEMMs (mma_gemm.cuh) checked against the
# CPU (test_backend_ops, GEMM cases), timed against the old kernels and cuBLAS (bench_gemm_cuda),
# then the DeepSeek-V3 slice in FP8 through the whole model (tiny slice logits vs the CPU, then
# bench_model_decode at batch 1/8/64 x context 1K/8K/32K; A/B runs with HELIX_GEMM=legacy|mma).
# Binaries: prebuilt/ or prebuilt.tgz (built on the dev machine, with the shared libraries the GPU
# machine lacks in prebuilt/lib) when they start here, else built here (needs .devdeps, as
# device_verify.sh).
#   OUT=dir bash scripts/device/gpu_gemm.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT" /tmp/gemm-logs
L=/tmp/gemm-logs  # logs that need not come back (at most 8 files do)
T0=$(date +%s)
el() { echo "[$(($(date +%s) - T0)) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
[ -f prebuilt.tgz ] && tar xzf prebuilt.tgz
export LD_LIBRARY_PATH=$PWD/prebuilt/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
B=prebuilt
if ! { $B/test_backend_ops --gtest_list_tests > /dev/null 2>&1 &&
  $B/bench_model_decode --help > /dev/null 2>&1 && $B/helix --help > /dev/null 2>&1; }; then
  echo "prebuilt binaries do not start here: building"
  B=${1:-/tmp/b-gemm}
  if ! pkg-config --exists libpcre2-8 2>/dev/null; then
    for f in ../../.devdeps/*.deb .devdeps/*.deb; do [ -f "$f" ] && dpkg -x "$f" /tmp/pfx; done
    export PKG_CONFIG_SYSROOT_DIR=/tmp/pfx
    export PKG_CONFIG_PATH=/tmp/pfx/usr/lib/x86_64-linux-gnu/pkgconfig
    export LD_LIBRARY_PATH=/tmp/pfx/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH
  fi
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_MPI=OFF -DHELIX_BENCH=ON \
    -DHELIX_SANITIZE_TESTS=OFF > "$L/cmake.log" 2>&1 || { tail -20 "$L/cmake.log"; exit 1; }
  ninja -C "$B" -j16 test_backend_ops bench_gemm_cuda bench_model_decode helix > "$L/build.log" 2>&1 ||
    { grep -m20 -A5 error "$L/build.log"; exit 1; }
  mkdir -p "$B/x" && cp "$B/tests/test_backend_ops" "$B/bench/bench_gemm_cuda" \
    "$B/bench/bench_model_decode" "$B/helix" "$B/x/" && B=$B/x
fi
el "binaries in $B"
timeout 150 $B/test_backend_ops --gtest_filter='*Gemm*' > "$OUT/parity.log" 2>&1
PARITY=$?
el "parity rc=$PARITY: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/parity.log" | tr '\n' ' ')"
grep -E "FAILED|Failure" "$OUT/parity.log" | head -10
grep "\[parity\]" "$OUT/parity.log" | grep -E "mma|fp8|grouped" | sort -k5 -g -r | head -4
[ -z "${SKIP_GEMM_BENCH:-}" ] && timeout 200 $B/bench_gemm_cuda --iters 20 --m ${GEMM_M:-1,8,64} --json "$OUT/gemm.json" > "$OUT/gemm.log" 2>&1
el "bench_gemm rc=$?"
grep -E "copy bandwidth" "$OUT/gemm.log"
grep -E "dense gate_up|grouped" "$OUT/gemm.log" | head -40
[ -n "${GEMM_ONLY:-}" ] && exit 0

# Whole model: the tiny FP8 slice against the CPU (same check as gpu_model_fp8.sh).
T=/tmp/tiny-gemm
if [ -z "${SKIP_TINY:-}" ]; then
python3 tools/make_slice.py --out $T --tiny > "$L/tiny.log" 2>&1
P=5,17,300,42,7,99,900,23,4,8,15,16,23,42
$B/helix score --model $T/fp8 --tokens $P --out "$OUT/fp8_kept.npy" --device cuda --dtype bfloat16 > /dev/null 2>&1
HELIX_GEMM=legacy $B/helix score --model $T/fp8 --tokens $P --out "$OUT/fp8_legacy.npy" --device cuda --dtype bfloat16 > /dev/null 2>&1
$B/helix score --model $T/bf16 --tokens $P --out "$OUT/bf16.npy" --device cuda --dtype bfloat16 > /dev/null 2>&1
$B/helix score --model $T/fp8 --tokens $P --out "$OUT/cpu.npy" --device cpu > /dev/null 2>&1
python3 - "$OUT" << 'PY'
import sys, numpy as np
d = sys.argv[1]
a, l, b, c = (np.load(f"{d}/{n}.npy").astype(np.float64) for n in ("fp8_kept", "fp8_legacy", "bf16", "cpu"))
r = lambda x, y: np.linalg.norm(x - y) / np.linalg.norm(y)
print(f"tiny slice logits rel_l2 vs cpu fp32: fp8 kept (mma) {r(a, c):.3g}, fp8 kept (legacy) {r(l, c):.3g}, bf16 ckpt {r(b, c):.3g}")
PY
rm -f "$OUT"/*.npy
el tiny
fi
S=/tmp/slice-gemm
timeout 120 python3 tools/make_slice.py --out $S --format fp8 > "$L/make_slice.log" 2>&1
el "make_slice fp8 rc=$? $(du -sh $S/fp8 2> /dev/null | cut -f1)"
# HELIX_OP_TIMING with graphs on: the device time of each point's graph replay (cuda_backend.cpp),
# next to the step time (device + the host side of the logits, --host-logits).
HELIX_OP_TIMING=1 timeout 200 $B/bench_model_decode --model $S/fp8 --batches 1,8,64 \
  --contexts 1024,8192,32768 --steps 12 --warmup 3 --host-logits ${SWEEP_ARGS:-} \
  > "$OUT/helix_fp8.jsonl" \
  2> "$L/helix_fp8.err"
el "helix fp8 rc=$?"
cat "$OUT/helix_fp8.jsonl"
grep -E "graph replay|op timing" "$L/helix_fp8.err" | tee "$OUT/graph_fp8.txt"
tail -2 "$L/helix_fp8.err"
[ -n "${SWEEP_ONLY:-}" ] && [ $(($(date +%s) - T0)) -gt ${BF16_BEFORE:-150} ] && exit 0
if [ -n "${SWEEP_ONLY:-}" ]; then
  rm -rf $S/fp8
  timeout 150 python3 tools/make_slice.py --out $S --format bf16 > "$L/make_slice_bf16.log" 2>&1
  el "make_slice bf16 rc=$?"
  HELIX_OP_TIMING=1 timeout 200 $B/bench_model_decode --model $S/bf16 --batches 8,64 \
    --contexts 1024 --steps 12 --warmup 3 > "$OUT/helix_bf16.jsonl" 2> "$L/helix_bf16.err"
  el "helix bf16 rc=$?"
  cat "$OUT/helix_bf16.jsonl"
  grep -E "graph replay|op timing" "$L/helix_bf16.err" | tee "$OUT/graph_bf16.txt"
  exit 0
fi
# Where the step goes: per-op GPU time of eager steps (HELIX_OP_TIMING, cuda_backend.cpp).
for b in ${OPTIME_BATCHES:-64 8}; do
  HELIX_OP_TIMING=1 timeout 60 $B/bench_model_decode --model $S/fp8 --batches $b --contexts 1024 \
    --steps 4 --warmup 1 --no-cuda-graph > /dev/null 2> "$L/optime_b$b.txt"
  el "op timing batch $b rc=$?"
  grep -A40 "op timing" "$L/optime_b$b.txt" | tee -a "$OUT/optime_fp8.txt" | head -24
done
[ $(($(date +%s) - T0)) -gt ${BF16_BEFORE:-150} ] && exit 0
# bf16 slice, batch 8 and 64 at 1K (the grouped bf16 kernel changed).
rm -rf $S/fp8
timeout 150 python3 tools/make_slice.py --out $S --format bf16 > "$L/make_slice_bf16.log" 2>&1
el "make_slice bf16 rc=$?"
timeout 200 $B/bench_model_decode --model $S/bf16 --batches 8,64 --contexts 1024 \
  --steps 12 --warmup 3 > "$OUT/helix_bf16.jsonl" 2> "$L/helix_bf16.err"
el "helix bf16 rc=$?"
cat "$OUT/helix_bf16.jsonl"; tail -2 "$L/helix_bf16.err"
