#!/usr/bin/env bash
# Starts `helix serve` on a free port and drives it with a Node client:
#   openai  the official `openai` npm package (installed into NPM_DIR on first use): completions
#           and chat, streamed and not, greedy ids equal to `helix generate`, bad input -> 4xx
#   load    64 concurrent raw clients: queue driven full, cancels mid-stream, KV back to empty,
#           /metrics consistent with what the clients saw
# Exit 77 (ctest: skipped) when node, npm or the npm registry is not available.
# usage: serve_check.sh HELIX_BIN MODE MODEL_DIR NPM_DIR
set -uo pipefail
helix=$1 mode=$2 model=$3 npm_dir=$4
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null || { echo "SKIP: node is not installed"; exit 77; }

if [ "$mode" = openai ]; then
  command -v npm >/dev/null || { echo "SKIP: npm is not installed"; exit 77; }
  if [ ! -d "$npm_dir/node_modules/openai" ]; then
    mkdir -p "$npm_dir"
    timeout 300 npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error openai@6 \
      >"$npm_dir/install.log" 2>&1 || { echo "SKIP: npm install openai failed (offline?)";
                                        tail -5 "$npm_dir/install.log"; exit 77; }
  fi
  # The reference: `helix generate` on the same prompts (greedy), through the tokenizer CLIs.
  max_tokens=24
  gen() {  # ids -> generated ids
    "$helix" generate --model "$model" --tokens "$1" --max-new-tokens $max_tokens --quiet | tail -n 1
  }
  text() {  # ids -> text as JSON string
    [ -z "$1" ] && { echo '""'; return; }
    "$helix" detokenize --model "$model" --tokens "$1" --skip-special |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s)))'
  }
  expected="{\"ids\":["
  for p in "1,2,3" "5,6,7,8,9,10,11" "200,17,3,99,42,42,8,1,250"; do
    expected+="{\"prompt\":[$p],\"greedy\":[$(gen "$p")]},"
  done
  expected="${expected%,}],\"text\":["
  for t in "In the beginning God created" "And the LORD spake unto Moses, saying" "Blessed are"; do
    ids=$(printf '%s' "$t" | "$helix" tokenize --model "$model" | tail -n 1) || exit 1
    g=$(gen "$ids")
    # `helix generate --prompt` prints the reply and one newline.
    direct=$("$helix" generate --model "$model" --prompt "$t" --max-new-tokens $max_tokens --quiet |
             node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s.slice(0,-1))))')
    expected+="{\"prompt\":$(printf '%s' "$t" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s)))'),\"greedy\":[$g],\"text\":$(text "$g"),\"generate_text\":$direct},"
  done
  expected="${expected%,}],\"chat\":["
  chats=('[{"role":"user","content":"Who made the heaven and the earth?"}]'
         '[{"role":"system","content":"Answer in the words of the King James Bible."},{"role":"user","content":"What is love?"},{"role":"assistant","content":"Charity suffereth long."},{"role":"user","content":"And faith?"}]')
  for m in "${chats[@]}"; do
    ids=$(printf '%s' "$m" | "$helix" render-chat --model "$model" --add-generation-prompt |
          "$helix" tokenize --model "$model" --no-special | tail -n 1) || exit 1
    g=$(gen "$ids")
    expected+="{\"messages\":$m,\"greedy\":[$g],\"text\":$(text "$g")},"
  done
  expected="${expected%,}],\"chat_generate\":"
  # One user turn: `helix generate --prompt P --chat` is the reference.
  expected+=$("$helix" generate --model "$model" --prompt "Who made the heaven and the earth?" --chat \
              --max-new-tokens $max_tokens --quiet |
              node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s.slice(0,-1))))')
  expected+="}"
  flags=(--api-key test-key)
else
  expected="{}"
  max_tokens=0
  flags=(--max-running 8 --max-waiting 16 --tp 1 --cp 2 --tokens-per-block 8 --ep 2 --eplb-slots 10
         --eplb-interval 8)
fi

log=$(mktemp)
"$helix" serve --model "$model" --port 0 "${flags[@]}" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^helix serve: listening on http:\/\/[^:]*:\([0-9]*\)$/\1/p' "$log")
  [ -n "$port" ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
[ -n "$port" ] || { echo "helix serve did not start:"; cat "$log"; exit 1; }

PORT=$port MODEL=$(basename "$model") NPM_DIR=$npm_dir EXPECTED=$expected MAX_TOKENS=$max_tokens \
  timeout 240 node "$here/${mode}_check.mjs"
rc=$?
kill -TERM $pid
wait $pid
src=$?
if [ $rc -ne 0 ]; then echo "server log:"; tail -20 "$log"; exit $rc; fi
[ $src -eq 0 ] || { echo "helix serve exited with $src on SIGTERM"; tail -20 "$log"; exit 1; }
echo OK
