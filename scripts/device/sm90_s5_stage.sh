#!/usr/bin/env bash
# Stages a device call of scripts/device/sm90_s5.sh: the scripts, the torch baseline and the gzipped
# binaries of sm90bin/ into /work/main/.dev/sm90 (git-ignored there), to be carried by `run`.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=/work/main/.dev/sm90
rm -rf "$D"; mkdir -p "$D/scripts/device" "$D/bench" "$D/sm90bin"
cp scripts/device/*.sh "$D/scripts/device/"; cp bench/mla_torch_baseline.py "$D/bench/"
for f in sm90bin/*; do case "$f" in *.gz) ;; *) gzip -c "$f" > "$D/$f.gz";; esac; done
du -sh "$D"
