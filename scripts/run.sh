#!/usr/bin/env bash
# The main job on the embedded default: the tiny DeepSeek-V3 in models/tiny (trained on the King
# James Bible by tools/train_tiny.py) continues a text prompt greedily, single rank; then the same
# prompt as a chat turn; then the same with Helix (cp 2) on CPU threads, which gives the same text.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
PROMPT="In the beginning"
./build/helix generate --model models/tiny --prompt "$PROMPT" --max-new-tokens 48
./build/helix generate --model models/tiny --prompt "And Jesus answered and said" --chat --max-new-tokens 48
./build/helix generate --model models/tiny --prompt "$PROMPT" --max-new-tokens 48 --cp 2 --tokens-per-block 4
