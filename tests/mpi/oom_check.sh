#!/usr/bin/env bash
# A fatal error on one MPI rank (here: KV cache out of memory on CP rank 0) must end the whole job
# with exit code 2 and the error line, not leave the other ranks waiting in a collective.
# usage: oom_check.sh HELIX_BIN MPIEXEC MODEL_DIR
set -uo pipefail
helix=$1 mpiexec=$2 model=$3
out=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 60 "$mpiexec" --oversubscribe \
  -np 2 "$helix" generate --model "$model" --tokens 1,2,3,4,5,6,7,8,9,10 --max-new-tokens 20 \
  --cp 2 --comm mpi --kv-blocks 1 --tokens-per-block 4 2>&1)
rc=$?
echo "$out" | head -3
[ $rc -eq 2 ] || { echo "expected exit code 2, got $rc"; exit 1; }
echo "$out" | grep -q "error: KV cache out of memory" || { echo "missing error line"; exit 1; }
echo OK
