#!/usr/bin/env bash
# On the GPU machine: FP8 weights kept in GPU memory. Checks the tiny slice (FP8-kept bf16 run vs
# the bf16 checkpoint holding the same dequantised weights, and vs the CPU fp32 reference), then
# times decode of the full FP8 DeepSeek-V3 slice. Usage: OUT=dir bash scripts/device/gpu_model_fp8.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-gpu-model}
mkdir -p "$OUT"
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_MPI=OFF -DHELIX_BENCH=ON \
  > "$OUT/cmake.log" 2>&1
ninja -C "$B" -j16 helix bench_model_decode > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
el build
T=/tmp/tiny-gpu-model
python3 tools/make_slice.py --out $T --tiny > "$OUT/tiny.log" 2>&1; el "tiny rc=$?"
P=5,17,300,42,7,99,900,23,4,8,15,16,23,42
"$B/helix" score --model $T/fp8 --tokens $P --out "$OUT/fp8_kept.npy" --device cuda --dtype bfloat16 2>&1 | tail -1
"$B/helix" score --model $T/bf16 --tokens $P --out "$OUT/bf16.npy" --device cuda --dtype bfloat16 2>&1 | tail -1
"$B/helix" score --model $T/fp8 --tokens $P --out "$OUT/cpu.npy" --device cpu 2>&1 | tail -1
python3 - "$OUT" <<'PY'
import sys, numpy as np
d = sys.argv[1]
a, b, c = (np.load(f"{d}/{n}.npy").astype(np.float64) for n in ("fp8_kept", "bf16", "cpu"))
r = lambda x, y: np.linalg.norm(x - y) / np.linalg.norm(y)
print(f"tiny slice logits rel_l2: fp8-kept vs bf16 ckpt {r(a, b):.3g}, fp8-kept vs cpu fp32 {r(a, c):.3g}, bf16 ckpt vs cpu fp32 {r(b, c):.3g}")
PY
"$B/helix" generate --model $T/fp8 --tokens $P --max-new-tokens 8 --ignore-eos --device cuda 2>/dev/null | tr '\n' ' '; echo " <- fp8 kept"
"$B/helix" generate --model $T/bf16 --tokens $P --max-new-tokens 8 --ignore-eos --device cuda 2>/dev/null | tr '\n' ' '; echo " <- bf16"
[ -n "${TINY_ONLY:-}" ] && exit 0
S=/tmp/slice-gpu-model
rm -rf $S/bf16
timeout 70 python3 tools/make_slice.py --out $S --format fp8 > "$OUT/make_slice.log" 2>&1
el "make_slice fp8 rc=$? $(du -sh $S/fp8 2>/dev/null | cut -f1)"
REM=$(( 190 - ($(date +%s) - T0) ))
timeout $REM "$B/bench/bench_model_decode" --model $S/fp8 --batches 1,8,64 --contexts 1024,32768 \
  --steps 12 --warmup 3 > "$OUT/helix_fp8.jsonl" 2> "$OUT/helix_fp8.err"
el "helix fp8 rc=$?"; cat "$OUT/helix_fp8.jsonl"; tail -3 "$OUT/helix_fp8.err"
