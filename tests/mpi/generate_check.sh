#!/usr/bin/env bash
# Helix under mpirun: `helix generate --comm mpi` on N processes must print the same greedy ids
# (last stdout line) as the single-rank run, and as transformers (the fixture's reference).
# usage: generate_check.sh HELIX_BIN MPIEXEC FIXTURE_DIR TP CP TOKENS_PER_BLOCK [EP [PREFILL]]
set -euo pipefail
helix=$1 mpiexec=$2 fixture=$3 tp=$4 cp=$5 tpb=$6 ep=${7:-1} prefill=${8:-context}
np=$((tp * cp > ep ? tp * cp : ep))
# Prompt 2 of the fixture (23 tokens) and its reference continuation, from ref.json.
prompt=$(tr -d ' \n' < "$fixture/ref.json" | sed 's/.*"prompts":\[\[[^]]*\],\[[^]]*\],\[\([^]]*\)\].*/\1/')
expect=$(tr -d ' \n' < "$fixture/ref.json" | sed 's/.*"greedy":\[\[[^]]*\],\[[^]]*\],\[\([^]]*\)\].*/\1/')
single=$("$helix" generate --model "$fixture" --tokens "$prompt" --max-new-tokens 40 --quiet | tail -n 1)
stats=$(mktemp)
multi=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$mpiexec" --oversubscribe -np "$np" \
  "$helix" generate --model "$fixture" --tokens "$prompt" --max-new-tokens 40 --comm mpi \
  --tp "$tp" --cp "$cp" --ep "$ep" --prefill "$prefill" --tokens-per-block "$tpb" \
  --stats-json "$stats" | tail -n 1)
echo "reference: $expect"
echo "single:    $single"
echo "mpi np=$np: $multi"
[ "$single" = "$expect" ] || { echo "single-rank ids differ from transformers"; exit 1; }
[ "$multi" = "$single" ] || { echo "mpirun ids differ from the single-rank run"; exit 1; }
grep -q '"cp_rank"' "$stats" || { echo "stats file lacks per-rank entries"; exit 1; }
ranks=$(grep -c '"cp_rank"' "$stats")
[ "$ranks" -eq "$np" ] || { echo "stats file has $ranks ranks, expected $np"; exit 1; }
echo OK
