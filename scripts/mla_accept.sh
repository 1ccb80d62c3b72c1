#!/usr/bin/env bash
# Issue 8's acceptance bench in one device call, on a build that has bench_mla_decode_bf16 (e.g.
# after `SKIP_CPU=1 BENCH=1 EXTRA_TARGETS=bench_mla_decode_bf16 bash scripts/device_verify.sh`):
# PyTorch eager bf16 at 128 and 16 heads (also the measured bf16 GEMM rate), then the MLA bench at
# 128 and 16 heads (bf16 and FP8 KV; batch 1/8/32/64 x 1K..128K, 1M at batch 1 and 8; batch-1
# latency against the launch floor). Four JSON files under $OUT; the tables on stdout.
#   OUT=dir bash scripts/mla_accept.sh build-dir
set -uo pipefail
cd "$(dirname "$0")/.."
B=${1:?build dir}
OUT=${OUT:-./out}
mkdir -p "$OUT"
t0=$SECONDS
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
for h in 128 16; do
  timeout 240 python3 bench/mla_torch_baseline.py --heads $h --json "$OUT/mla_torch_baseline_h$h.json" \
    > /tmp/torch_h$h.log 2>&1
  echo "== torch eager, $h heads: rc=$? ($((SECONDS - t0)) s)"
  cat /tmp/torch_h$h.log
done
GEMM=$(python3 -c "import json;print(json.load(open('$OUT/mla_torch_baseline_h128.json'))['gemm_tflops'])" 2>/dev/null || echo 0)
for h in 128 16; do
  timeout ${BENCH_TIMEOUT:-240} "$B/bench/bench_mla_decode_bf16" --heads $h --gemm-tflops "$GEMM" \
    --json "$OUT/bench_mla_decode_bf16_h$h.json" > /tmp/bench_h$h.log 2>&1
  echo "== bench_mla_decode_bf16 --heads $h: rc=$? ($((SECONDS - t0)) s)"
  cat /tmp/bench_h$h.log
done
