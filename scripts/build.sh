#!/usr/bin/env bash
# Configures and builds helix into build/ (Release). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >&2
ninja -C build -j"$(nproc)" >&2
