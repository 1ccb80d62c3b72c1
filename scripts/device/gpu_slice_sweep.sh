#!/usr/bin/env bash
# Issue 7's acceptance bench on the GPU machine, in one call: the tree checked first
# (device_verify.sh with SKIP_CPU=1 BENCH=1: -Werror build, CUDA tests, backend parity, the
# embedded model), the measured copy bandwidth, then the DeepSeek-V3 slice (tools/make_slice.py,
# bf16 and FP8, the same model) decoded by helix bf16, helix FP8 (ids sampled on the device,
# CUDA graphs) and transformers bf16 at batch 1/8/64 x context 1K/8K/32K. Needs .devdeps (see
# device_verify.sh). JSON lines and logs in $OUT.
#   OUT=dir bash scripts/device/gpu_slice_sweep.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-verify}
S=/tmp/slice-sweep
BATCHES=${BATCHES:-1,8,64}
CONTEXTS=${CONTEXTS:-1024,8192,32768}
mkdir -p "$OUT"
T0=$SECONDS
el() { echo "[$((SECONDS - T0)) s] $*"; }
rm -rf /tmp/slice-verify  # 64 GB of disk: both slices take 43 GB
MS=""
if ! [ -d $S/bf16 ] || ! [ -d $S/fp8 ]; then
  python3 tools/make_slice.py --out $S --format both > "$OUT/make_slice.log" 2>&1 &
  MS=$!
fi
SKIP_CPU=1 BENCH=1 OUT="$OUT" bash scripts/device_verify.sh "$B" > "$OUT/verify.txt" 2>&1
el "device_verify rc=$?"
grep -v "^models/tiny" "$OUT/verify.txt"
grep "^models/tiny" "$OUT/verify.txt" | cut -c1-60
python3 - << 'PY' 2>&1 | tee "$OUT/copy_bw.txt"
import torch, time
n = 4 << 30
x = torch.empty(n, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.time()
for _ in range(10): y.copy_(x)
torch.cuda.synchronize(); dt = (time.time() - t) / 10
print(f"copy_bandwidth_GBps {2 * n / dt / 1e9:.1f} (read+write of a 4 GiB device copy)")
PY
[ -n "$MS" ] && wait "$MS"
el "make_slice: $(tail -1 "$OUT/make_slice.log" 2> /dev/null) $(du -sh $S/bf16 $S/fp8 2> /dev/null | cut -f1 | tr '\n' ' ')"
for fmt in bf16 fp8; do
  timeout 170 "$B/bench/bench_model_decode" --model $S/$fmt --batches "$BATCHES" --contexts "$CONTEXTS" \
    --steps 12 --warmup 3 --sample > "$OUT/helix_$fmt.jsonl" 2> "$OUT/helix_$fmt.err"
  el "helix $fmt rc=$? $(grep -m1 'loaded in' "$OUT/helix_$fmt.err")"
  cat "$OUT/helix_$fmt.jsonl"
done
REM=$((575 - (SECONDS - T0)))
if [ $REM -gt 60 ]; then
  timeout $REM python3 bench/bench_hf_decode.py --model $S/bf16 --batches "$BATCHES" \
    --contexts "$CONTEXTS" --steps 3 --warmup 1 --json "$OUT/hf_bf16.json" > "$OUT/hf_bf16.log" 2>&1
  el "transformers rc=$?"
  tail -12 "$OUT/hf_bf16.log"
fi
