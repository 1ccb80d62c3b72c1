#!/usr/bin/env bash
# Session 5's closing device call for the memory-bound MLA kernel (run from a copy of this tree
# that carries .devdeps and the binaries scripts/device/mla_mem_s5_build.sh made in build-bin/):
# 1. scripts/device_verify.sh with SKIP_CPU=1: -Werror build of this tree, helix_cuda_tests (the
#    MLA kernel cases against the CPU op) and test_backend_ops, the embedded model, serve on cuda;
# 2. bench_mla_decode_bf16 --heads 16, main's build (bench_v0) and this tree's (bench_$NEW, default f3)
#    alternating ROUNDS times: batch 8 / 32 / 64 x 16K / 64K / 128K and 8 x 1M, bf16 and FP8;
#    batch 1 x 4K; 32 heads at two shapes;
# 3. STAMPS: the stamps variants (st: this tree; stn: bf16 by padded rows, no tensor map) at
#    STAMP_SHAPES (default 8 x 16K and 32 x 64K).
# Logs under $OUT (JSON of the last round of each build); the tables on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}; mkdir -p "$OUT"
t0=$SECONDS
if [ "${VERIFY:-1}" = 1 ]; then
  # The Debian packages the build needs here (PCRE2, cpp-httplib): this copy's .devdeps, else the
  # checkout's (carry it too).
  D=.devdeps; ls $D/*.deb > /dev/null 2>&1 || D=$(cd ../.. && pwd)/.devdeps
  echo "devdeps: $D: $(ls $D/*.deb 2>/dev/null | wc -l) packages" | tee "$OUT/verify.log"
  . scripts/devdeps_env.sh "$D"
  echo "pkg-config: pcre2 $(pkg-config --exists libpcre2-8 && echo yes || echo no), cpp-httplib $(pkg-config --exists cpp-httplib && echo yes || echo no)" | tee -a "$OUT/verify.log"
  OUT=/tmp/vout SKIP_CPU=1 bash scripts/device_verify.sh /tmp/b-mem 2>&1 | tee -a "$OUT/verify.log" | \
    grep -vE "^\s*$" | tail -25
  grep -ho "rel_l2 out [0-9.e+-]*" /tmp/vout/helix_cuda_tests.log 2>/dev/null | sort -k3 -g | tail -1 | \
    sed 's/^/max MLA kernel /'
  grep -h -A3 -i "mla" /tmp/vout/helix_cuda_tests.log | grep -E "^\[" | head -3
  echo "verify done ($((SECONDS - t0)) s)"
fi
[ "${BENCH:-1}" = 1 ] || exit 0  # BENCH=0: the verify step only
V=/tmp/mla-mem; mkdir -p $V
for f in build-bin/bench_*.gz; do n=$(basename "$f" .gz); gunzip -c "$f" > $V/$n; chmod +x $V/$n; done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
row() { grep -E "^ +$1 " "$2" | awk '{printf "  %3s x %7s %4s %9s us of_copy %s %s\n", $2, $3, $4, $5, $8, $11}'; }
for r in $(seq 1 "${ROUNDS:-2}"); do
  for v in v0 ${NEW:-f3}; do
    timeout 150 $V/bench_$v --heads 16 --batches 8 32 64 --contexts 16384 65536 131072 --skip-1m \
      --json "$OUT/bench_16h_$v.json" > "$OUT/b.log" 2>&1
    echo "== $v 16 heads round $r rc=$? ($((SECONDS - t0)) s)"; row 16 "$OUT/b.log"; cat "$OUT/b.log" >> "$OUT/bench_all.log"
    timeout 60 $V/bench_$v --heads 16 --batches 8 --contexts 1048576 --skip-1m \
      --json "$OUT/bench_16h_1m_$v.json" > "$OUT/b.log" 2>&1
    row 16 "$OUT/b.log"; cat "$OUT/b.log" >> "$OUT/bench_all.log"
  done
done
# small shapes (batch-1 latency: stream and graph), B1VARS alternating twice
for r in 1 2; do
  for v in ${B1VARS:-v0 ${NEW:-f3}}; do
    timeout 60 $V/bench_$v --heads 16 --batches 1 8 --contexts 1024 4096 --skip-1m > "$OUT/b.log" 2>&1
    echo "== $v small shapes round $r"; row 16 "$OUT/b.log"; grep -E "batch-1" "$OUT/b.log" | sed 's/^ */  /'
    cat "$OUT/b.log" >> "$OUT/bench_all.log"
  done
done
for v in v0 ${NEW:-f3}; do
  timeout 60 $V/bench_$v --heads 32 --batches 8 32 --contexts 16384 131072 --skip-1m > "$OUT/b.log" 2>&1
  echo "== $v 32 heads"; row 32 "$OUT/b.log"; cat "$OUT/b.log" >> "$OUT/bench_all.log"
done
rm -f "$OUT/b.log"
for v in ${STAMPS:-}; do
  for shp in ${STAMP_SHAPES:-8x16384 32x65536}; do
    sb=${shp%x*}; sc=${shp#*x}
    timeout 60 $V/bench_$v --heads 16 --batches $sb --contexts $sc --skip-1m --iters 10 > "$OUT/st.log" 2>&1
    echo "== stamps $v $sb x $sc rc=$? ($((SECONDS - t0)) s)"; row 16 "$OUT/st.log"
    python3 scripts/device/mla_mem_s5_stamps.py "$OUT/st.log" | \
      grep -E "call|CTA end|combine end|first tile|split end|waiting|per tile"
    cat "$OUT/st.log" >> "$OUT/stamps_all.log"
  done
done
rm -f "$OUT/st.log"
echo "total $((SECONDS - t0)) s"
