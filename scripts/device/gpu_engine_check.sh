#!/usr/bin/env bash
# The engine's device call (issue 7: sampling on the GPU, bf16 accuracy, --gpu-memory-fraction), in
# one call: builds helix + the CUDA tests, runs the sampling parity (GPU sampler vs its CPU
# reference and the CPU Sampler), the HF fixtures through the GPU model (device vs host greedy,
# seeded draws, the memory fraction), the bf16 accuracy variants, transformers' own bf16 drift on
# every fixture (on the GPU while the build runs), a CLI smoke, and the CPU sampler tests.
#   OUT=dir [SKIP_DRIFT=1] bash scripts/device/gpu_engine_check.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-engine}
mkdir -p "$OUT"
. scripts/devdeps_env.sh
FIX="fp32_qnull fp32_qlora_yarn_legacy fp32_qlora_yarn_v5 bf16_qlora bf16_qnull_legacy fp32_skewed
fp16_bias_noshared_legacy fp32_wide tiny_kjv"
drift=
if [ -z "${SKIP_DRIFT:-}" ]; then
  (for f in $FIX; do echo tests/fixtures/$f; done | PYTHONUNBUFFERED=1 xargs timeout 300 python3 \
    bench/hf_bf16_drift.py > "$OUT/hf_drift.log" 2>&1) &
  drift=$!
fi
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_BENCH=OFF -DHELIX_MPI=OFF \
    -DHELIX_SANITIZE_TESTS=OFF > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
  t0=$SECONDS
  ninja -C "$B" -j16 helix helix_cuda_tests test_backend_ops helix_tests >> "$OUT/build.log" 2>&1 ||
    { grep -m20 -B2 -A10 "error" "$OUT/build.log"; exit 1; }
  echo "build: $((SECONDS - t0)) s"
} 2>&1 | tee "$OUT/smoke.log"
[ -x "$B/helix" ] || exit 1
# Every op case (the sampler's parity and timing among them), then every CUDA test (ops, bf16
# MLA, the HF fixtures through the GPU model, the memory fraction, the bf16 accuracy variants).
timeout 300 "$B/tests/test_backend_ops" > "$OUT/parity.log" 2>&1
echo "test_backend_ops rc=$?" | tee -a "$OUT/smoke.log"
timeout 400 "$B/tests/helix_cuda_tests" > "$OUT/cuda_tests.log" 2>&1
echo "helix_cuda_tests rc=$?" | tee -a "$OUT/smoke.log"
{
  M=tests/fixtures/fp32_qnull
  G="generate --model $M --tokens 211,183,186,100,225 --tokens 241 --max-new-tokens 16"
  echo "cpu:                $("$B/helix" $G --device cpu 2>/dev/null | tr '\n' ' ')"
  for dt in float32 bfloat16; do
    echo "cuda $dt:     $("$B/helix" $G --device cuda --dtype $dt 2>"$OUT/err.txt" | tr '\n' ' ') | $(tail -1 "$OUT/err.txt")"
  done
  echo "cuda bf16 frac 0.05: $("$B/helix" $G --device cuda --gpu-memory-fraction 0.05 2>&1 | tr '\n' ' ')"
  S="--temperature 0.8 --top-k 20 --top-p 0.9 --seed 3"
  echo "cuda sampled:       $("$B/helix" $G --device cuda $S 2>/dev/null | tr '\n' ' ')"
  echo "cuda sampled again: $("$B/helix" $G --device cuda $S 2>/dev/null | tr '\n' ' ')"
  echo "cuda --gpu-memory-fraction 1.5: $("$B/helix" $G --device cuda --gpu-memory-fraction 1.5 2>&1; echo "rc=$?")"
  grep -E "^\[  (PASSED|FAILED)|tests ran" "$OUT/parity.log" "$OUT/cuda_tests.log"
  grep -E "summary|too large|fraction 0.01" "$OUT/cuda_tests.log"
  grep -E "^\[timing\]" "$OUT/parity.log"
} 2>&1 | tee -a "$OUT/smoke.log"
CUDA_VISIBLE_DEVICES= timeout 300 "$B/tests/helix_tests" --gtest_brief=1 \
  --gtest_filter='Sampler.*:CounterSampler.*:Cli.DeviceFlagErrors:*HfFixture*' > "$OUT/cpu_tests.log" 2>&1
echo "helix_tests (CPU: sampler, CLI device flags, HF fixtures) rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/cpu_tests.log" | tr '\n' ' ')" | tee -a "$OUT/smoke.log"
if [ -n "$drift" ]; then
  wait $drift
  grep "rel_l2" "$OUT/hf_drift.log"
fi
