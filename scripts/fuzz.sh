#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and runs each for $1 seconds (default
# 30): the safetensors header, config.json and the EPLB placement/load JSON parsers; then the
# tokenizer and HTTP request parser fuzzers for $2 seconds (default: a quarter of $1, at least 5). Exits non-zero when a
# fuzzer finds a crash; the crashing input is left in build-fuzz/fuzz-work/<target>/. New corpus
# entries go to build-fuzz/fuzz-work/<target>/corpus, never into the seed corpora under
# fuzz/corpus/.
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
targets=(fuzz_safetensors_header fuzz_config fuzz_eplb_json fuzz_tokenizer fuzz_request_parse)
ninja -C "$build" -j2 "${targets[@]}"

# target -> seed corpus folder, seconds, extra flags
declare -A seeds=([fuzz_safetensors_header]=safetensors [fuzz_config]=config [fuzz_eplb_json]=eplb
                  [fuzz_tokenizer]=tokenizer [fuzz_request_parse]=request)
declare -A time=([fuzz_safetensors_header]=$secs [fuzz_config]=$secs [fuzz_eplb_json]=$secs
                 [fuzz_tokenizer]=$tok_secs [fuzz_request_parse]=$tok_secs)
declare -A extra=([fuzz_safetensors_header]="-dict=$root/fuzz/safetensors.dict"
                  [fuzz_tokenizer]="-max_len=4096" [fuzz_request_parse]="-dict=$root/fuzz/request.dict")
for t in "${targets[@]}"; do
  work=$build/fuzz-work/$t
  mkdir -p "$work/corpus"
  status=0
  # shellcheck disable=SC2086
  "$build/fuzz/$t" -max_total_time="${time[$t]}" -timeout=10 -rss_limit_mb=2048 ${extra[$t]:-} \
    -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" \
    "$root/fuzz/corpus/${seeds[$t]}" 2>"$work/log" || status=$?
  if [[ $status -ne 0 ]]; then
    tail -n 40 "$work/log" >&2
    echo "$t failed (exit $status); inputs in $work/" >&2
    exit "$status"
  fi
  echo "$t: no crash in ${time[$t]}s ($(grep -o 'stat::number_of_executed_units: [0-9]*' \
    "$work/log" | awk '{print $2}') runs)"
done
