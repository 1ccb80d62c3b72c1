#!/usr/bin/env bash
# The latency kernel's phase trace (bin/lat_trace*, built from scripts/device/lat_trace.cu with
# MLA_LAT_TRACE) at batch 1, 16 / 128 heads.
cd "$(dirname "$0")/../.."
for b in bin/lat_trace*; do
  echo "#### $b"
  for a in "16 1024" "16 4096" "128 4096" "16 16384"; do ./$b $a; done
done
