#!/usr/bin/env bash
# The GPU machine check of a whole tree, in one device call: builds helix with -Werror (CUDA on),
# runs every CUDA test (ops vs CPU, backend parity, bf16 MLA, the HF fixtures through the GPU
# model), `helix serve` on the GPU, and then the CPU suite on that machine. The GPU machine has no
# registry and lacks PCRE2 and cpp-httplib: carry their Debian packages in .devdeps/ (`cd .devdeps
# && apt-get download libpcre2-dev libpcre2-8-0 libcpp-httplib-dev libcpp-httplib0.11
# libbrotli-dev libbrotli1`); they are unpacked into /tmp/pfx when pkg-config cannot find them.
#   OUT=dir bash scripts/device_verify.sh [build-dir]
# Knobs: SKIP_CPU=1 leaves out the CPU suite (EXTRA_TARGETS="..." builds more than the CUDA
# tests and helix then); BENCH=1 also builds bench_model_decode;
# SLICE=bf16|fp8 also writes the DeepSeek-V3 slice in that format (in the background, while
# building) and times whole-model decode on it with ids sampled on the device
# (bench_model_decode --sample) at SLICE_BATCHES x SLICE_CONTEXTS.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-verify}
mkdir -p "$OUT"
T0=$SECONDS
SLICE=${SLICE:-}
BENCH=${BENCH:-}
if [ -n "$SLICE" ]; then
  python3 tools/make_slice.py --out /tmp/slice-verify --format "$SLICE" > "$OUT/make_slice.log" 2>&1 &
  SLICE_PID=$!
fi
. scripts/devdeps_env.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# What `helix serve` would need here (cpp-httplib's pkg-config requires these dev packages).
echo "serve deps: $(for m in cpp-httplib openssl zlib libbrotlidec; do pkg-config --exists $m 2> /dev/null && printf '%s ' "$m:yes" || printf '%s ' "$m:no"; done)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_WERROR=ON -DHELIX_BENCH=$([ -n "$SLICE$BENCH" ] && echo ON || echo OFF) \
  -DHELIX_SANITIZE_TESTS=OFF > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
t0=$SECONDS
TARGETS=""
[ -n "${SKIP_CPU:-}" ] && TARGETS="helix helix_cuda_tests test_backend_ops $([ -n "$SLICE$BENCH" ] && echo bench_model_decode) ${EXTRA_TARGETS:-}"
# shellcheck disable=SC2086
if ! ninja -C "$B" -j16 $TARGETS > "$OUT/build.log" 2>&1; then
  grep -m20 -B2 -A10 "error" "$OUT/build.log"
  # The carried cpp-httplib is a Debian build: should it not link here, verify the rest.
  grep -q -i "httplib\|brotli\|ssl" "$OUT/build.log" || exit 1
  echo "build failed on the carried cpp-httplib: again with -DHELIX_SERVER=OFF"
  cmake -S . -B "$B" -DHELIX_SERVER=OFF >> "$OUT/cmake.log" 2>&1
  # shellcheck disable=SC2086
  ninja -C "$B" -j16 $TARGETS > "$OUT/build.log" 2>&1 || { grep -m20 -B2 -A10 "error" "$OUT/build.log"; exit 1; }
fi
echo "build: $((SECONDS - t0)) s"
status=0
OUT="$OUT" bash scripts/cuda_tests.sh "$B" || status=1
# The embedded model on every device: the README's first command's prompt.
for dev in "cpu" "cuda --dtype float32" "cuda --dtype bfloat16" "cuda --dtype bfloat16 --no-cuda-graph"; do
  echo "models/tiny $dev: $("$B/helix" generate --model models/tiny --prompt "In the beginning" \
    --max-new-tokens 24 --device $dev 2>"$OUT/tiny.err" | tr '\n' ' ') $(grep -m1 'tokens/s' "$OUT/tiny.err")"
done
# helix serve on the GPU (when built: cpp-httplib found): a greedy completion must equal `helix
# generate` of the same prompt on the same device; then eight concurrent requests (batched by the
# engine) must all finish with their 24 tokens.
if "$B/helix" serve --help 2>&1 | grep -q -- --port; then
  "$B/helix" serve --model models/tiny --device cuda --port 18093 > "$OUT/serve.log" 2>&1 &
  SP=$!
  for _ in $(seq 300); do curl -sf localhost:18093/health > /dev/null && break; sleep 0.2; done
  req() { curl -s localhost:18093/v1/completions -H 'Content-Type: application/json' \
    -d "{\"prompt\":\"$1\",\"max_tokens\":24,\"temperature\":0}"; }
  field() { python3 -c "import json,sys; c=json.load(sys.stdin)['choices'][0]; print($1)" 2>&1; }
  for p in "In the beginning" "And Jesus answered"; do
    want=$("$B/helix" generate --model models/tiny --prompt "$p" --max-new-tokens 24 --device cuda 2> /dev/null)
    got=$(req "$p" | field "c['text']")
    if [ "$got" = "$want" ]; then echo "serve cuda '$p': same text as generate"; else
      echo "serve cuda '$p': DIFFERS: got '$got' want '$want'"; status=1; fi
  done
  pids=""
  for i in $(seq 8); do req "prompt number $i" > "/tmp/serve_c$i.json" & pids="$pids $!"; done
  # shellcheck disable=SC2086
  wait $pids
  n=$(for i in $(seq 8); do field "len(c['token_ids'])" < "/tmp/serve_c$i.json"; done | grep -c '^24$')
  echo "serve cuda concurrent: $n of 8 requests returned 24 tokens"
  [ "$n" = 8 ] || status=1
  curl -s localhost:18093/metrics | grep -E '^helix_requests_total' | head -4
  kill $SP; wait $SP 2> /dev/null
else
  echo "serve cuda: not built (no cpp-httplib)"
fi
if [ -z "${SKIP_CPU:-}" ]; then
  timeout 420 ctest --test-dir "$B" -j12 -E '^cuda\.|serve_|tokenizer_exactness' --output-on-failure \
    > "$OUT/ctest_cpu.log" 2>&1 || status=1
  grep -E "tests passed|tests failed|Failed|\(Failed\)|Timeout" "$OUT/ctest_cpu.log" | head -20
fi
if [ -n "$SLICE" ]; then
  wait "$SLICE_PID"
  echo "make_slice $SLICE: rc=$? at $((SECONDS - T0)) s $(du -sh /tmp/slice-verify/$SLICE 2> /dev/null | cut -f1)"
  timeout "${SLICE_TIMEOUT:-240}" "$B/bench/bench_model_decode" --model /tmp/slice-verify/$SLICE \
    --batches "${SLICE_BATCHES:-1,8,64}" --contexts "${SLICE_CONTEXTS:-1024}" --steps 12 --warmup 3 \
    --sample > "$OUT/slice_$SLICE.jsonl" 2> "$OUT/slice_$SLICE.err"
  echo "bench_model_decode $SLICE --sample: rc=$? at $((SECONDS - T0)) s"
  cat "$OUT/slice_$SLICE.jsonl"
fi
echo "device_verify: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
exit $status
