#!/usr/bin/env bash
# One device call for a refactor that must cost nothing: this tree's CUDA tests, and a bench of
# this tree against the same bench of a base tree (SASS compared function by function, then both
# timed, alternating, ROUNDS times each).
#   Prebuilt benches (e.g. scripts/device/mla_mem_prebuild.sh in each tree): the tests build in the
#   background while they run:
#     NEW=path/bench BASE=path/bench OUT=dir bash scripts/device/dedupe_device.sh [build-dir]
#   A CMake bench target, built in this tree and in BASE_TREE (HELIX_BENCH=ON) before timing:
#     BENCH=bench_gemm_cuda BASE_TREE=dir OUT=dir bash scripts/device/dedupe_device.sh [build-dir]
# Knobs: BQ="bench flags" (defaults: bench_mla_decode_bf16 at 16 and 128 heads, batch 1 and 8,
# 4K and 64K tokens; bench_gemm_cuda: the down projections at m 1 and 8); ROUNDS (default 2);
# DEVDEPS (default .devdeps): PCRE2 packages for a machine without them.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
B=${1:-/tmp/b-dedupe}
BENCH=${BENCH:-}
DEVDEPS=${DEVDEPS:-.devdeps}
mkdir -p "$OUT" "$B"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv,noheader
. scripts/devdeps_env.sh "$DEVDEPS"
# configure TREE BUILD BENCH_ON
configure() {
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHELIX_WERROR=ON -DHELIX_BENCH="$3" \
    -DHELIX_SANITIZE_TESTS=OFF
}
t0=$SECONDS
if [ -n "$BENCH" ]; then
  BASE_TREE=${BASE_TREE:?BASE_TREE=the base tree}
  BB=$B-base
  (configure . "$B" ON > "$OUT/cmake.log" 2>&1 &&
    ninja -C "$B" -j10 helix_cuda_tests test_backend_ops "$BENCH" > "$OUT/build.log" 2>&1) &
  p1=$!
  (configure "$BASE_TREE" "$BB" ON > "$OUT/cmake_base.log" 2>&1 &&
    ninja -C "$BB" -j6 "$BENCH" > "$OUT/build_base.log" 2>&1) &
  p2=$!
  wait $p1 || { grep -m20 -B2 -A10 "error" "$OUT/build.log" "$OUT/cmake.log"; exit 1; }
  wait $p2 || { grep -m20 -B2 -A10 "error" "$OUT/build_base.log" "$OUT/cmake_base.log"; exit 1; }
  echo "builds: $((SECONDS - t0)) s"
  NEW=$B/bench/$BENCH BASE=$BB/bench/$BENCH
  BQ=${BQ:---filter down --m 1,8 --iters 20}
  BUILD_PID=
else
  NEW=${NEW:?NEW=path of this tree\'s bench}
  BASE=${BASE:?BASE=path of the base tree\'s bench}
  BQ=${BQ:---heads 128 16 --batches 1 8 --contexts 4096 65536 --iters 20 --skip-1m}
  # The tests build in the background (nice; the benches alternate, so both see the same load).
  (configure . "$B" OFF > "$OUT/cmake.log" 2>&1 &&
    nice -n 19 ninja -C "$B" -j14 helix_cuda_tests test_backend_ops > "$OUT/build.log" 2>&1) &
  BUILD_PID=$!
fi

# SASS, function by function, register numbers and addresses folded.
for t in NEW BASE; do cuobjdump --dump-sass "${!t}" > "/tmp/sass_$t.txt" 2> /dev/null; done
python3 - << 'EOF' | tee "$OUT/sass_diff.txt"
import re
def funcs(path):
    fs, cur = {}, None
    for line in open(path):
        m = re.match(r'\s*Function : (\S+)', line)
        if m:
            cur = m.group(1); fs[cur] = []; continue
        m = re.match(r'\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;', line)
        if cur and m:
            fs[cur].append(re.sub(r'0x[0-9a-f]+', 'X', m.group(1)))
    return fs
a, b = funcs('/tmp/sass_BASE.txt'), funcs('/tmp/sass_NEW.txt')
strip = lambda k: re.sub(r'_GLOBAL__N__[0-9a-f_]+', 'ANON', k)
a = {strip(k): v for k, v in a.items()}; b = {strip(k): v for k, v in b.items()}
same = 0
for k in sorted(set(a) | set(b)):
    if a.get(k) == b.get(k):
        same += 1; continue
    na = len(a.get(k) or []); nb = len(b.get(k) or [])
    print(f'differs: {k[:110]}: {na} -> {nb} instructions')
print(f'SASS identical: {same} of {len(set(a) | set(b))} functions')
EOF

for r in $(seq "${ROUNDS:-2}"); do
  for t in NEW BASE; do
    timeout 240 "${!t}" $BQ > "$OUT/bench_${t}_$r.log" 2>&1 || echo "bench $t round $r failed"
  done
done
python3 - "$OUT" "${ROUNDS:-2}" << 'EOF' | tee "$OUT/bench_compare.txt"
import re, sys, statistics
out, rounds = sys.argv[1], int(sys.argv[2])
def rows(path):
    r = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0].isdigit() and f[3] in ('bf16', 'fp8'):  # bench_mla_decode_bf16
            r[(f'{f[0]} heads, batch {f[1]}, {f[2]} tokens', f[3])] = float(f[4])
            continue
        m = re.match(r'^(.*?)\s+(\d+)\s+([\d.]+)\s+\d+\s+\d+%$', line.rstrip())  # bench_gemm_cuda
        if m:
            r[(m.group(1), 'm ' + m.group(2))] = 1e3 * float(m.group(3))
    return r
runs = {t: [rows(f'{out}/bench_{t}_{i}.log') for i in range(1, rounds + 1)] for t in ('NEW', 'BASE')}
print(f'{"case":<48} {"":>6} {"base us":>9} {"new us":>9} {"new/base":>8}')
for k in sorted(runs['NEW'][0]):
    nb = statistics.median(r[k] for r in runs['BASE'] if k in r)
    nn = statistics.median(r[k] for r in runs['NEW'] if k in r)
    print(f'{k[0]:<48} {k[1]:>6} {nb:>9.1f} {nn:>9.1f} {nn / nb:>8.3f}')
EOF

if [ -n "$BUILD_PID" ]; then
  wait $BUILD_PID || { grep -m20 -B2 -A10 "error" "$OUT/build.log" "$OUT/cmake.log"; exit 1; }
  echo "build: $((SECONDS - t0)) s (from the start of the benches)"
fi
status=0
OUT="$OUT" bash scripts/cuda_tests.sh "$B" || status=1
exit $status
