#!/usr/bin/env bash
# Builds everything (warnings as errors; the CUDA backend too where nvcc exists) and runs every test:
# unit and HF-fixture tests, the loader under AddressSanitizer, MPI runs under mpirun, and a bounded
# libFuzzer run of the safetensors header parser.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh -DHELIX_WERROR=ON
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bash scripts/fuzz.sh "${HELIX_FUZZ_SECONDS:-20}"
ctest --test-dir build --output-on-failure -j"$(nproc)"
