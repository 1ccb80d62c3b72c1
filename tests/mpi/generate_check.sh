#!/usr/bin/env bash
# Helix under mpirun: `helix generate --comm mpi` on N processes must print the same greedy ids
# (last stdout line) as the single-rank run, and as transformers (the fixture's reference).
# With BATCH > 1 the mpirun decodes that many copies of the prompt together (each must print the
# single-rank ids); EXTRA is one more flag for the mpirun (e.g. --hopb).
# usage: generate_check.sh HELIX_BIN MPIEXEC FIXTURE_DIR TP CP TOKENS_PER_BLOCK [EP [PREFILL
#        [BATCH [EXTRA]]]]
set -euo pipefail
helix=$1 mpiexec=$2 fixture=$3 tp=$4 cp=$5 tpb=$6 ep=${7:-1} prefill=${8:-context}
batch=${9:-1} extra=${10:-}
np=$((tp * cp > ep ? tp * cp : ep))
# Prompt 2 of the fixture (23 tokens) and its reference continuation, from ref.json.
prompt=$(tr -d ' \n' < "$fixture/ref.json" | sed 's/.*"prompts":\[\[[^]]*\],\[[^]]*\],\[\([^]]*\)\].*/\1/')
expect=$(tr -d ' \n' < "$fixture/ref.json" | sed 's/.*"greedy":\[\[[^]]*\],\[[^]]*\],\[\([^]]*\)\].*/\1/')
single=$("$helix" generate --model "$fixture" --tokens "$prompt" --max-new-tokens 40 --quiet | tail -n 1)
stats=$(mktemp)
args=()
for ((i = 0; i < batch; i++)); do args+=(--tokens "$prompt"); done
[ -n "$extra" ] && args+=("$extra")
multi=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$mpiexec" --oversubscribe -np "$np" \
  "$helix" generate --model "$fixture" "${args[@]}" --max-new-tokens 40 --comm mpi \
  --tp "$tp" --cp "$cp" --ep "$ep" --prefill "$prefill" --tokens-per-block "$tpb" \
  --stats-json "$stats" | tail -n "$batch")
echo "reference: $expect"
echo "single:    $single"
echo "mpi np=$np batch=$batch $extra:"
echo "$multi"
[ "$single" = "$expect" ] || { echo "single-rank ids differ from transformers"; exit 1; }
[ "$(echo "$multi" | wc -l)" -eq "$batch" ] || { echo "mpirun printed too few id lines"; exit 1; }
while IFS= read -r line; do
  [ "$line" = "$single" ] || { echo "mpirun ids differ from the single-rank run"; exit 1; }
done <<< "$multi"
grep -q '"cp_rank"' "$stats" || { echo "stats file lacks per-rank entries"; exit 1; }
if [ "$extra" = "--hopb" ]; then
  grep -q '"hopb": *true' "$stats" || { echo "HOP-B did not run (MPI thread level too low?)"; exit 1; }
fi
ranks=$(grep -c '"cp_rank"' "$stats")
[ "$ranks" -eq "$np" ] || { echo "stats file has $ranks ranks, expected $np"; exit 1; }
echo OK
