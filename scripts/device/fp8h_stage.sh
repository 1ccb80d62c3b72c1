#!/usr/bin/env bash
# Stages a device call of scripts/device/fp8h_probe.sh: the scripts and the gzipped binaries of
# /tmp/fp8bin (scripts/device/fp8h_prebuild.sh) into /work/main/.dev/fp8h (git-ignored there).
set -euo pipefail
cd "$(dirname "$0")/../.."
D=/work/main/.dev/fp8h
rm -rf "$D"; mkdir -p "$D/scripts/device" "$D/bench" "$D/fp8bin"
cp scripts/device/fp8h_*.sh "$D/scripts/device/"; cp bench/mla_torch_baseline.py "$D/bench/"
for f in ${BINS:-/tmp/fp8bin/*}; do gzip -c "$f" > "$D/fp8bin/$(basename "$f").gz"; done
du -sh "$D"
