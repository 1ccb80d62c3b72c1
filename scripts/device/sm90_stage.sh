#!/usr/bin/env bash
# Stages what a device call needs (scripts, the torch baseline, gzipped sm90bin/ binaries) into
# /work/main/.dev/sm90 (git-ignored there), to be carried by `run`.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=/work/main/.dev/sm90
rm -rf "$D"; mkdir -p "$D/scripts/device" "$D/bench" "$D/sm90bin"
cp scripts/device/sm90_device.sh "$D/scripts/device/"; cp bench/mla_torch_baseline.py "$D/bench/"
for f in sm90bin/*; do case "$f" in *.gz) ;; *) gzip -c "$f" > "$D/$f.gz";; esac; done
du -sh "$D"
