#!/usr/bin/env bash
# On the GPU machine, in one call: build, GPU model tests, transformers' own bf16 drift on two
# fixtures, then the DeepSeek-V3 slice decode bench (helix bf16, CUDA graph on/off at batch 1,
# transformers bf16) and the device copy bandwidth. Logs and JSON lines in $OUT.
# Usage: OUT=dir bash scripts/device/gpu_model_bench.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-gpu-model}
S=/tmp/slice-gpu-model
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_MPI=OFF -DHELIX_BENCH=ON \
  > "$OUT/cmake.log" 2>&1
ninja -C "$B" -j16 helix helix_cuda_tests bench_model_decode > "$OUT/build.log" 2>&1 ||
  { tail -40 "$OUT/build.log"; exit 1; }
el build
timeout 120 "$B/tests/helix_cuda_tests" --gtest_filter="${FILTER:-*CudaHfFixture*}" > "$OUT/cuda_tests.log" 2>&1
el "helix_cuda_tests rc=$?"; grep -E "FAILED|PASSED|graph vs" "$OUT/cuda_tests.log" | head -40
M=tests/fixtures/fp32_qnull
for g in "" "--no-cuda-graph"; do
  "$B/helix" generate --model $M --tokens 211,183,186,100,225 --tokens 241 --max-new-tokens 24 \
    --device cuda $g 2>&1 | tr '\n' ' '; echo " <- bf16 $g"
done
[ -n "${DRIFT:-}" ] && timeout 90 python3 bench/hf_bf16_drift.py tests/fixtures/fp32_qnull \
  tests/fixtures/bf16_qlora tests/fixtures/fp32_wide 2>&1 | grep "rel_l2"
el drift
python3 - <<'PY' 2>&1 | tee "$OUT/copy_bw.txt"
import torch, time
n = 4 << 30
x = torch.empty(n, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.time()
for _ in range(10): y.copy_(x)
torch.cuda.synchronize(); dt = (time.time() - t) / 10
print(f"copy_bandwidth_GBps {2 * n / dt / 1e9:.1f} (read+write of a 4 GiB device copy)")
PY
[ -d $S/bf16 ] || timeout 200 python3 tools/make_slice.py --out $S --format bf16 > "$OUT/make_slice.log" 2>&1
el "make_slice rc=$? $(du -sh $S/bf16 2>/dev/null | cut -f1)"
timeout 240 "$B/bench/bench_model_decode" --model $S/bf16 --batches 1,8,64 \
  --contexts 1024,8192,32768 --steps 12 --warmup 3 --compare-graph > "$OUT/helix_bf16.jsonl" \
  2> "$OUT/helix_bf16.err"
el "helix bf16 rc=$?"; cat "$OUT/helix_bf16.jsonl"; tail -3 "$OUT/helix_bf16.err"
REM=$(( 420 - ($(date +%s) - T0) ))
[ $REM -gt 30 ] && timeout $REM python3 bench/bench_hf_decode.py --model $S/bf16 --batches 1,8,64 \
  --contexts 1024,8192,32768 --steps 3 --warmup 1 --json "$OUT/hf_bf16.json" > "$OUT/hf_bf16.log" 2>&1
el "hf rc=$?"; tail -12 "$OUT/hf_bf16.log"
