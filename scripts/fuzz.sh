#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs the safetensors header fuzzer
# for $1 seconds (default 30), then the tokenizer fuzzer and the HTTP request parser fuzzer for $2
# seconds each (default: a quarter of $1, at least 5). Exits non-zero when the fuzzer finds a crash; the crashing input is
# left in build-fuzz/fuzz-work/. New corpus entries go to build-fuzz/fuzz-work/corpus, never into
# the seed corpus under fuzz/corpus/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-30}
tok_secs=${2:-$(( secs / 4 > 5 ? secs / 4 : 5 ))}
build=${HELIX_FUZZ_BUILD_DIR:-$root/build-fuzz}
cxx=${CXX_FUZZ:-clang++}

if ! [[ $secs =~ ^[0-9]+$ && $tok_secs =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [seconds] [tokenizer seconds]" >&2
  exit 2
fi

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHELIX_FUZZ=ON -DHELIX_TESTS=OFF -DHELIX_BENCH=OFF -DHELIX_CUDA=OFF -DHELIX_MPI=OFF >/dev/null
ninja -C "$build" -j2 fuzz_safetensors_header fuzz_tokenizer fuzz_request_parse

work=$build/fuzz-work
mkdir -p "$work/corpus"
status=0
"$build/fuzz/fuzz_safetensors_header" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -dict="$root/fuzz/safetensors.dict" -artifact_prefix="$work/" -print_final_stats=1 \
  "$work/corpus" "$root/fuzz/corpus/safetensors" || status=$?
if [[ $status -ne 0 ]]; then
  echo "fuzz_safetensors_header failed (exit $status); inputs in $work/" >&2
  exit "$status"
fi
echo "fuzz_safetensors_header: no crash in ${secs}s"

mkdir -p "$work/corpus_tokenizer"
status=0
"$build/fuzz/fuzz_tokenizer" -max_total_time="$tok_secs" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
  -artifact_prefix="$work/tokenizer-" -print_final_stats=1 \
  "$work/corpus_tokenizer" "$root/fuzz/corpus/tokenizer" || status=$?
if [[ $status -ne 0 ]]; then
  echo "fuzz_tokenizer failed (exit $status); inputs in $work/" >&2
  exit "$status"
fi
echo "fuzz_tokenizer: no crash in ${tok_secs}s"

mkdir -p "$work/corpus-request"
status=0
"$build/fuzz/fuzz_request_parse" -max_total_time="$tok_secs" -timeout=10 -rss_limit_mb=2048 \
  -dict="$root/fuzz/request.dict" -artifact_prefix="$work/" -print_final_stats=1 \
  "$work/corpus-request" "$root/fuzz/corpus/request" || status=$?
if [[ $status -ne 0 ]]; then
  echo "fuzz_request_parse failed (exit $status); inputs in $work/" >&2
  exit "$status"
fi
echo "fuzz_request_parse: no crash in ${tok_secs}s"
