#!/usr/bin/env bash
# Builds everything (warnings as errors; the CUDA backend too where nvcc exists) and runs every test:
# unit and HF-fixture tests, the loader under AddressSanitizer, the thread backend, HOP-B, EPLB
# worker and unit tests under ThreadSanitizer + UBSan, MPI runs under mpirun, the hostile-input
# probe, and bounded libFuzzer runs (safetensors header, config.json, EPLB JSON; seconds each).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh -DHELIX_WERROR=ON
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bash scripts/fuzz.sh "${HELIX_FUZZ_SECONDS:-8}"
ctest --test-dir build --output-on-failure -j"$(nproc)"
