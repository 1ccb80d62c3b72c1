#!/usr/bin/env bash
# Hostile-input probe of the helix CLI (issue 10's acceptance test): a few hundred bad flags,
# configs, special files, outputs and EPLB files against the tiny model, each under a 10 s
# timeout. Every case must end in either
#   exit 0 with finite output (ids on stdout; a finite .npy; finite JSON numbers), or
#   exit 2 with exactly one line on stderr, starting "error: ";
# never a signal, a timeout, or another exit code. Prints each failing case and a summary;
# exits 1 if any case failed.
#   usage: tools/probe_hostile.sh [path/to/helix] [model dir]
# HELIX_PROBE_QUICK=1 (what CI runs) tries fewer values per flag and config field (~300 cases).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
helix=${1:-$root/build/helix}
model=${2:-$root/models/tiny}
work=$(mktemp -d /tmp/helix_probe_XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

total=0
failed=0

# Checks that an exit-0 run produced finite results: a .npy named by $out_npy, JSON on stdout.
finite_ok() {
  local out=$1
  if [[ -n ${out_npy:-} && -f $out_npy ]]; then
    python3 - "$out_npy" <<'EOF' || return 1
import math, struct, sys
raw = open(sys.argv[1], 'rb').read()
hl = struct.unpack('<H', raw[8:10])[0]
data = raw[10 + hl:]
vals = struct.unpack('<%df' % (len(data) // 4), data)
sys.exit(0 if all(math.isfinite(v) for v in vals) else 1)
EOF
  fi
  # Any 'nan'/'inf' in stdout (ids, JSON) is a silent wrong answer.
  if grep -qiE '(^|[^a-z])(nan|inf|infinity|null)([^a-z]|$)' "$out"; then return 1; fi
  return 0
}

# run <description> <args...>: one case.
run() {
  local what=$1
  shift
  total=$((total + 1))
  local out=$work/out err=$work/err
  timeout -k 2 10 "$helix" "$@" >"$out" 2>"$err" </dev/null
  local rc=$?
  local why=""
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    why="timed out (10 s)"
  elif [[ $rc -gt 128 ]]; then
    why="killed by signal $((rc - 128))"
  elif [[ $rc -eq 2 ]]; then
    local n
    n=$(grep -c '' "$err")
    if [[ $n -ne 1 ]] || ! head -n1 "$err" | grep -q '^error: '; then
      why="exit 2 but stderr is not one 'error:' line ($n lines)"
    elif [[ -s $out ]]; then
      why="exit 2 but something was printed on stdout"
    fi
  elif [[ $rc -eq 0 ]]; then
    finite_ok "$out" || why="exit 0 with non-finite output"
  else
    why="exit code $rc"
  fi
  if [[ -n $why ]]; then
    failed=$((failed + 1))
    echo "FAIL [$what]: $why"
    echo "  helix $(printf '%q ' "$@")"
    head -c 600 "$err" | sed 's/^/  stderr: /'
  fi
}

gen=(generate --model "$model" --tokens 1,2,3 --max-new-tokens 2 --quiet)

# ---- numeric flags -------------------------------------------------------------------------
values=(0 -1 1 2 3 7 64 65536 2147483647 2147483648 99999999999999999999 nan inf -inf 1e308
        -1e308 abc "" $'1\n2' 0x10 1.5 " 4")
quick=${HELIX_PROBE_QUICK:-0}
[[ $quick == 1 ]] && values=(0 -1 3 65536 2147483648 nan -inf 1e308 abc $'1\n2')
for flag in --tp --cp --ep --tokens-per-block --kv-blocks --max-new-tokens --seed --temperature \
  --top-p --eplb-layers-per-step; do
  for v in "${values[@]}"; do run "$flag $v" "${gen[@]}" "$flag" "$v"; done
done
for flag in --eplb-slots --eplb-interval; do
  for v in "${values[@]}"; do run "--ep 2 $flag $v" "${gen[@]}" --ep 2 "$flag" "$v"; done
done
for combo in "--tp 65536 --cp 65536" "--tp 4 --cp 1024" "--cp 4096" "--ep 1048576" \
  "--tp 2 --cp 2 --ep 3" "--tp 2 --cp 2 --ep 8 --eplb-slots 64" "--ep 16 --eplb-slots 2147483647" \
  "--comm mpi --cp 2" "--comm bogus" "--prefill bogus" "--hopb --cp 3" "--kv-blocks 1"; do
  # shellcheck disable=SC2086
  run "$combo" "${gen[@]}" $combo
done

# ---- tokens --------------------------------------------------------------------------------
for t in "" "," "1,,2" "-1" "256" "255" "1 2" "1;2" $'1\n2' "99999999999999999999" "0x1" "+1" \
  "$(printf '1,%.0s' $(seq 600))1"; do
  run "tokens '$t'" generate --model "$model" --tokens "$t" --max-new-tokens 2 --quiet
done

# ---- config.json mutations -----------------------------------------------------------------
mutate() {  # mutate <dir> <field> <json value or DELETE>
  python3 - "$model/config.json" "$1/config.json" "$2" "$3" <<'EOF'
import json, sys
src, dst, field, val = sys.argv[1:5]
j = json.load(open(src))
if val == 'DELETE':
    j.pop(field, None)
else:
    j[field] = json.loads(val)
json.dump(j, open(dst, 'w'))
EOF
}
fields=(vocab_size hidden_size intermediate_size moe_intermediate_size num_hidden_layers
        num_attention_heads q_lora_rank kv_lora_rank qk_nope_head_dim qk_rope_head_dim v_head_dim
        n_routed_experts n_shared_experts num_experts_per_tok n_group topk_group
        first_k_dense_replace max_position_embeddings rms_norm_eps routed_scaling_factor
        eos_token_id rope_parameters model_type)
cvals=(DELETE null -1 0 1 2147483647 4294967296 1e300 '"x"' '[]' '{}' 3.5)
[[ $quick == 1 ]] && cvals=(DELETE null 0 4294967296 1e300 '"x"')
for f in "${fields[@]}"; do
  for v in "${cvals[@]}"; do
    d=$work/m
    rm -rf "$d" && mkdir -p "$d" && cp "$model"/* "$d"/
    mutate "$d" "$f" "$v"
    run "config $f=$v" generate --model "$d" --tokens 1,2,3 --max-new-tokens 2 --quiet
  done
done

# ---- special files -------------------------------------------------------------------------
fresh() { rm -rf "$work/m" && mkdir -p "$work/m" && cp "$model"/* "$work/m"/; }
for victim in config.json model.safetensors generation_config.json; do
  fresh && rm "$work/m/$victim" && mkfifo "$work/m/$victim"
  run "FIFO $victim" "${gen[@]/$model/$work/m}"
  fresh && rm "$work/m/$victim" && mkdir "$work/m/$victim"
  run "directory $victim" "${gen[@]/$model/$work/m}"
  fresh && rm "$work/m/$victim" && ln -s /dev/zero "$work/m/$victim"
  run "/dev/zero $victim" "${gen[@]/$model/$work/m}"
  fresh && rm "$work/m/$victim" && ln -s "$work/m/$victim" "$work/m/$victim"
  run "symlink loop $victim" "${gen[@]/$model/$work/m}"
  fresh && : >"$work/m/$victim"
  run "empty $victim" "${gen[@]/$model/$work/m}"
  fresh && head -c 1000 /dev/urandom >"$work/m/$victim"
  run "random bytes $victim" "${gen[@]/$model/$work/m}"
done
fresh && echo '{"eos_token_id": [1,' >"$work/m/generation_config.json"
run "truncated generation_config" "${gen[@]/$model/$work/m}"
fresh && echo '{"eos_token_id": 1e30}' >"$work/m/generation_config.json"
run "eos 1e30" "${gen[@]/$model/$work/m}"
fresh && rm "$work/m/model.safetensors" && echo '{"weight_map": {"a": "../../etc/passwd"}}' \
  >"$work/m/model.safetensors.index.json"
run "index escapes" "${gen[@]/$model/$work/m}"
run "model is a file" generate --model "$model/config.json" --tokens 1 --quiet
run "model missing" generate --model /nonexistent --tokens 1 --quiet

# ---- outputs -------------------------------------------------------------------------------
for dest in /dev/full "$work" /nonexistent/dir/f /proc/version; do
  run "--stats-json $dest" "${gen[@]}" --stats-json "$dest"
  run "--logits-out $dest" "${gen[@]}" --logits-out "$dest"
  run "--eplb-record $dest" "${gen[@]}" --ep 2 --eplb-record "$dest"
  run "score --out $dest" score --model "$model" --tokens 1,2 --out "$dest"
done
out_npy=$work/ok.npy
run "score ok" score --model "$model" --tokens 1,2,3 --out "$out_npy"
out_npy=""

# ---- EPLB files ----------------------------------------------------------------------------
loads=('{"load": [[5,1,3,7]]}' '{"load": [[1.7e308,1.6e308,1e308,1.5e308]]}' '{"load": [[-1,2,3,4]]}'
       '{"load": [[1e-320,0,0,0]]}' '{"load": [[0,0,0,0]]}' '{"load": []}' '{"load": [[]]}'
       '{"load": [[1,2],[1,2,3]]}' '{"load": [["1",2,3,4]]}' '[1,2]' '{"load": [[1,2,3,4]]' '')
i=0
for l in "${loads[@]}"; do
  i=$((i + 1))
  printf '%s' "$l" >"$work/load$i.json"
  for sr in "8 2" "4 4" "2000000000 2" "8 0" "7 2" "2147483647 1" "16 2"; do
    read -r s r <<<"$sr"
    run "plan load$i slots $s ranks $r" eplb plan --load "$work/load$i.json" --slots "$s" \
      --ranks "$r" --out "$work/p.json" --json
  done
done
placements=('{"num_slots": 16000000, "num_ranks": 2, "num_experts": 16, "layers": []}'
            '{"num_slots": 16, "num_ranks": 2, "layers": [{"slot_to_expert": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]},{"slot_to_expert": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}]}'
            '{"num_slots": 16, "num_ranks": 2, "layers": [{"slot_to_expert": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,99]},{"slot_to_expert": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}]}'
            '{"num_slots": 2147483647, "num_ranks": 1, "layers": [{"slot_to_expert": []}]}'
            '{"num_slots": 16, "num_ranks": 4, "layers": [{"slot_to_expert": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]},{"slot_to_expert": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}]}'
            'not json')
i=0
for p in "${placements[@]}"; do
  i=$((i + 1))
  printf '%s' "$p" >"$work/pl$i.json"
  run "placement $i" "${gen[@]}" --ep 2 --eplb-placement "$work/pl$i.json"
done
mkfifo "$work/fifo.json"
run "load FIFO" eplb plan --load "$work/fifo.json" --slots 8 --ranks 2 --out "$work/p.json"
run "placement FIFO" "${gen[@]}" --ep 2 --eplb-placement "$work/fifo.json"
run "plan --out /dev/full" eplb plan --load "$work/load1.json" --slots 8 --ranks 2 --out /dev/full

echo "probe_hostile: $total cases, $failed failed"
[[ $failed -eq 0 ]]
