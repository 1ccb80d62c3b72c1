#!/usr/bin/env bash
# The main job on the embedded default: greedy decode with the tiny DeepSeek-V3 model in models/tiny,
# single rank, then the same with Helix (cp 2) on CPU threads.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
PROMPT=17,93,4,211,58,120,7
./build/helix generate --model models/tiny --tokens $PROMPT --max-new-tokens 32
./build/helix generate --model models/tiny --tokens $PROMPT --max-new-tokens 32 --cp 2 --tokens-per-block 4
