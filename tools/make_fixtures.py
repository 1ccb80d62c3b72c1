#!/usr/bin/env python3
"""Makes the tiny random DeepSeek-V3 checkpoints and HF transformers references that helix's
tests compare against. Runs where transformers 5.x and torch are installed (the GPU machine):

    python3 tools/make_fixtures.py --out tests/fixtures [--tiny models/tiny]

For every variant it writes DIR/{config.json, generation_config.json, *.safetensors} and
DIR/ref.json with the prompts, the greedy continuations of `generate` and the paths of the
reference logits (.npy, float32): `score_<i>.npy` [n_tokens, vocab] of one full forward, and
`gen_<i>.npy` [n_new, vocab] of generate's per-step logits. References are computed in fp32
(bf16 checkpoints are upcast on load), eager attention, on the CPU.
"""
import argparse
import json
import math
import os
import shutil

import numpy as np
import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

BASE = dict(vocab_size=256, hidden_size=48, intermediate_size=64, moe_intermediate_size=16,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
            n_shared_experts=1, n_routed_experts=16, num_experts_per_tok=4, n_group=4,
            topk_group=2, first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=32,
            qk_rope_head_dim=16, qk_nope_head_dim=16, v_head_dim=16,
            max_position_embeddings=512, routed_scaling_factor=2.5, norm_topk_prob=True,
            rope_interleave=True, tie_word_embeddings=False, rms_norm_eps=1e-6)

YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=128,
            beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)

VARIANTS = {
    # name: (config overrides, dtype, layout, extra)
    "fp32_qnull": (dict(), torch.float32, "v5", {}),
    "fp32_qlora_yarn_legacy": (dict(q_lora_rank=24, rope_parameters=YARN), torch.float32, "legacy", {}),
    "fp32_qlora_yarn_v5": (dict(q_lora_rank=24, rope_parameters=dict(YARN, mscale=0.707, factor=8.0),
                                num_hidden_layers=4, first_k_dense_replace=2, rope_interleave=False,
                                norm_topk_prob=False, n_group=2, topk_group=1, num_experts_per_tok=3),
                           torch.float32, "v5", {"shard": "60KB"}),
    "bf16_qlora": (dict(q_lora_rank=24, tie_word_embeddings=True, n_shared_experts=2),
                   torch.bfloat16, "v5", {}),
    "bf16_qnull_legacy": (dict(rope_parameters=dict(rope_type="default", rope_theta=5000.0)),
                          torch.bfloat16, "legacy", {}),
    # Router bias strongly favours experts 0-2: the skewed load the EPLB tests balance.
    "fp32_skewed": (dict(num_hidden_layers=3, first_k_dense_replace=1), torch.float32, "v5",
                    {"skew": True}),
    # attention biases, no shared experts, every layer MoE, f16 weights, yarn with factor only
    # (attention factor from get_mscale(factor)), published layout.
    "fp16_bias_noshared_legacy": (dict(attention_bias=True, n_shared_experts=0, first_k_dense_replace=0,
                                       q_lora_rank=24,
                                       rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=2.0,
                                                            original_max_position_embeddings=256)),
                                  torch.float16, "legacy", {}),
    # 8 heads, 32 experts in 8 groups (3 kept), top-6, no renormalisation, scaling 1.0.
    "fp32_wide": (dict(num_attention_heads=8, num_key_value_heads=8, n_routed_experts=32, n_group=8,
                       topk_group=3, num_experts_per_tok=6, norm_topk_prob=False,
                       routed_scaling_factor=1.0, hidden_size=64), torch.float32, "v5", {}),
}

PROMPT_LENS = [1, 5, 23, 70]


def randomize(model, seed, skew=False):
    """Non-trivial weights: unit-ish activations, norms around 1, a non-zero router bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() == 0:  # e.g. shared experts of width 0 when n_shared_experts is 0
                continue
            if p.dim() == 1:  # norm weights
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(fan_in)))
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                v = 0.3 * torch.randn(b.shape, generator=g)
                if skew:
                    v[:3] += 2.0
                b.copy_(v)


def to_legacy(path):
    """Rewrites config.json in the published layout: top-level rope_theta + rope_scaling."""
    cfg_path = os.path.join(path, "config.json")
    cfg = json.load(open(cfg_path))
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    if rp.get("rope_type", "default") != "default":
        rp["type"] = rp.pop("rope_type")
        cfg["rope_scaling"] = rp
    else:
        cfg["rope_scaling"] = None
    json.dump(cfg, open(cfg_path, "w"), indent=2)


def make(name, out_dir, seed):
    over, dtype, layout, extra = VARIANTS[name]
    kw = dict(BASE)
    kw.update(over)
    cfg = DeepseekV3Config(**kw)
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(cfg)
    randomize(model, seed, extra.get("skew", False))
    path = os.path.join(out_dir, name)
    shutil.rmtree(path, ignore_errors=True)
    model.to(dtype).save_pretrained(path, max_shard_size=extra.get("shard", "50GB"))
    if layout == "legacy":
        to_legacy(path)
    # The reference is the checkpoint as transformers reads it back, computed in fp32.
    ref_model = DeepseekV3ForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                      attn_implementation="eager").eval()
    print(name, "transformers reads rope as", ref_model.config.rope_parameters)
    g = torch.Generator().manual_seed(seed + 1)
    ref = {"name": name, "dtype": str(dtype).replace("torch.", ""), "layout": layout,
           "prompts": [], "greedy": [], "score": [], "gen_logits": []}
    for i, n in enumerate(PROMPT_LENS):
        ids = torch.randint(2, cfg.vocab_size, (1, n), generator=g)
        with torch.no_grad():
            logits = ref_model(ids).logits[0].float().numpy()
            out = ref_model.generate(ids, max_new_tokens=40, do_sample=False,
                                     output_logits=True, return_dict_in_generate=True)
        new = out.sequences[0, n:].tolist()
        gen = torch.stack([x[0] for x in out.logits]).float().numpy()
        np.save(os.path.join(path, f"score_{i}.npy"), logits.astype(np.float32))
        np.save(os.path.join(path, f"gen_{i}.npy"), gen.astype(np.float32))
        ref["prompts"].append(ids[0].tolist())
        ref["greedy"].append(new)
        ref["score"].append(f"score_{i}.npy")
        ref["gen_logits"].append(f"gen_{i}.npy")
    json.dump(ref, open(os.path.join(path, "ref.json"), "w"), indent=1)
    print(name, "ok", [len(x) for x in ref["greedy"]])
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures")
    ap.add_argument("--tiny", default="models/tiny", help="where to copy the embedded default")
    ap.add_argument("--only", nargs="*", help="make only these variants (no embedded default)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for i, name in enumerate(VARIANTS):
        if not args.only or name in args.only:
            make(name, args.out, 1000 + i)
    if args.only:
        return
    # The embedded default model is the fp32 q_lora-null fixture (checkpoint files only).
    shutil.rmtree(args.tiny, ignore_errors=True)
    os.makedirs(args.tiny)
    src = os.path.join(args.out, "fp32_qnull")
    for f in os.listdir(src):
        if f.endswith(".json") and f != "ref.json" or f.endswith(".safetensors"):
            shutil.copy(os.path.join(src, f), args.tiny)


if __name__ == "__main__":
    main()
