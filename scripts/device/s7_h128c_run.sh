#!/usr/bin/env bash
# Session 7 (h128c) device call: the sm90 kernel's cluster merge (HELIX_SM90_CLUSTER=c forces it)
# against main. Binaries built on the dev machine by s7_h128c_prebuild.sh, carried gzipped in
# hbin/: bench_base (main), bench_mla (this branch), test_mla (this branch).
#   OUT=dir [ROUNDS=2] [ARGS=...] [CLUS="8x1 4x2"] [TEST_FILTER=...] [TEST_CLUS="8x1 4x2"]
# (cxn: HELIX_SM90_CLUSTER=c, HELIX_SM90_CLUSTER_N=n) bash s7_h128c_run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
FINAL_OUT=${OUT:-./out}
OUT=/tmp/hlogs
mkdir -p "$FINAL_OUT" "$OUT" /tmp/hb
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
for f in hbin/*.gz; do
  n=$(basename "$f" .gz)
  gunzip -c "$f" > "/tmp/hb/$n"
  chmod +x "/tmp/hb/$n"
done
if [ -x /tmp/hb/test_mla ] && [ -n "${TEST_FILTER:-}" ]; then
  for cn in 0x1 ${TEST_CLUS:-}; do
    c=${cn%x*}
    HELIX_SM90_CLUSTER=$c HELIX_SM90_CLUSTER_N=${cn#*x} timeout 200 /tmp/hb/test_mla --gtest_filter="$TEST_FILTER" > "$OUT/test_mla_c$cn.log" 2>&1
    echo "test_mla cluster=$cn rc=$? (${SECONDS}s)"
    grep -E "^\[  PASSED|^\[  FAILED|^\[==========\]|cluster merge" "$OUT/test_mla_c$cn.log"
    grep -E -A6 "Failure" "$OUT/test_mla_c$cn.log" | head -20
  done
fi
ARGS=${ARGS:---heads 128 --batches 8 --contexts 16384 65536 131072 --skip-1m}
run() {  # name bin cluster(cxn) round
  HELIX_SM90_CLUSTER=${3%x*} HELIX_SM90_CLUSTER_N=${3#*x} timeout 120 "/tmp/hb/$2" ${ARGS} > "$OUT/$1_$4.log" 2>&1
  echo "== $1 round $4 rc=$? (${SECONDS}s)"
  grep -E "cluster merge|NON-FINITE" "$OUT/$1_$4.log" | head -3
  grep -E "^ +[0-9]+ +[0-9]+ +[0-9]+ +bf16" "$OUT/$1_$4.log" | awk '{printf "%s %sx%s %s %s %s | ", $1, $2, $3, $4, $5, $6} END {print ""}'
}
# JOBS="name:bin:cxn:batch ..." (context CTX, default 16384): one bench process each, per round.
if [ -n "${JOBS:-}" ]; then
  for round in $(seq ${ROUNDS:-2}); do
    for j in $JOBS; do
      IFS=: read -r name bin cn batch <<< "$j"
      ARGS="--heads 128 --batches $batch --contexts ${CTX:-16384} --skip-1m" run "${name}_b$batch" "$bin" "$cn" "$round"
    done
  done
else
  for round in $(seq ${ROUNDS:-2}); do
    run base bench_base 0x1 $round
    run mine bench_mla 0x1 $round
    for c in ${CLUS:-8x1}; do run clu$c bench_mla $c $round; done
  done
fi
echo "total ${SECONDS}s"
tar czf "$FINAL_OUT/logs.tgz" -C "$OUT" .
