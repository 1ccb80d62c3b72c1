#!/usr/bin/env python3
"""Writes a "DeepSeek-V3 slice": the published DeepSeek-V3 config with 2 layers (1 dense, 1 MoE)
and random weights, as a bf16 checkpoint (~28 GB) and/or in the published FP8 format (E4M3
weights + per-128x128-block weight_scale_inv, ~15 GB), sharded safetensors + index.

The weights are drawn on the GPU (CPU without one), quantised to FP8 block by block, and the bf16
checkpoint holds exactly the dequantised FP8 weights (rounded to bf16), so both checkpoints are
the same model. Tensors stream to disk shard by shard; host memory holds one shard at a time.

  python3 tools/make_slice.py --out /tmp/slice                 # both formats, full size
  python3 tools/make_slice.py --out /tmp/slice --format fp8
  python3 tools/make_slice.py --out /tmp/tiny --tiny           # small dims, same structure
Writes OUT/bf16 and/or OUT/fp8, each with config.json, generation_config.json, shards, index.
"""
import argparse
import json
import math
import os
import sys
import time

# Published DeepSeek-V3 config.json (deepseek-ai/DeepSeek-V3), less auto_map, with 2 layers.
PUBLISHED = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 2,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 0,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}
# Same structure, small enough to build and load in seconds (dims not multiples of 128 on
# purpose: partial scale blocks).
TINY = {
    "hidden_size": 320,
    "intermediate_size": 640,
    "moe_intermediate_size": 96,
    "n_routed_experts": 16,
    "num_experts_per_tok": 4,
    "n_group": 4,
    "topk_group": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "q_lora_rank": 192,
    "kv_lora_rank": 128,
    "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16,
    "v_head_dim": 32,
    "vocab_size": 1000,
}
QUANT = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
         "weight_block_size": [128, 128]}
BLOCK = 128
FP8_MAX = 448.0


def tensors(cfg):
    """(name, shape, kind) in file order; kind: linear (FP8 in the FP8 checkpoint), embed, norm,
    router, bias."""
    D, H = cfg["hidden_size"], cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    ql, kl = cfg["q_lora_rank"], cfg["kv_lora_rank"]
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], D), "embed")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (D,), "norm"),
            (p + "post_attention_layernorm.weight", (D,), "norm"),
            (p + "self_attn.q_a_proj.weight", (ql, D), "linear"),
            (p + "self_attn.q_a_layernorm.weight", (ql,), "norm"),
            (p + "self_attn.q_b_proj.weight", (H * (nope + rope), ql), "linear"),
            (p + "self_attn.kv_a_proj_with_mqa.weight", (kl + rope, D), "linear"),
            (p + "self_attn.kv_a_layernorm.weight", (kl,), "norm"),
            (p + "self_attn.kv_b_proj.weight", (H * (nope + vd), kl), "linear"),
            (p + "self_attn.o_proj.weight", (D, H * vd), "linear"),
        ]

        def mlp(prefix, inter):
            return [(prefix + "gate_proj.weight", (inter, D), "linear"),
                    (prefix + "up_proj.weight", (inter, D), "linear"),
                    (prefix + "down_proj.weight", (D, inter), "linear")]

        if i < cfg["first_k_dense_replace"]:
            out += mlp(p + "mlp.", cfg["intermediate_size"])
        else:
            E, I = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
            out += [(p + "mlp.gate.weight", (E, D), "router"),
                    (p + "mlp.gate.e_score_correction_bias", (E,), "bias")]
            for e in range(E):
                out += mlp(p + f"mlp.experts.{e}.", I)
            out += mlp(p + "mlp.shared_experts.", I * cfg["n_shared_experts"])
    out += [("model.norm.weight", (D,), "norm"), ("lm_head.weight", (cfg["vocab_size"], D), "embed")]
    return out


def quantize(w):
    """FP8 E4M3 + weight_scale_inv [ceil(n/128), ceil(k/128)] such that w ~ q * scale."""
    import torch
    n, k = w.shape
    nb, kb = math.ceil(n / BLOCK), math.ceil(k / BLOCK)
    pad = torch.zeros(nb * BLOCK, kb * BLOCK, dtype=torch.float32, device=w.device)
    pad[:n, :k] = w
    blocks = pad.view(nb, BLOCK, kb, BLOCK)
    scale = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    deq = (q.float() * scale[:, None, :, None]).view(nb * BLOCK, kb * BLOCK)[:n, :k]
    return q.view(nb * BLOCK, kb * BLOCK)[:n, :k].contiguous(), scale.contiguous(), deq


class ShardWriter:
    """Collects host tensors and writes a shard whenever it passes shard_bytes."""

    def __init__(self, path, shard_bytes, total_hint):
        self.path, self.shard_bytes = path, shard_bytes
        self.cur, self.cur_bytes, self.files, self.weight_map = {}, 0, [], {}
        self.total = 0
        self.nshards_hint = max(1, math.ceil(total_hint / shard_bytes))
        os.makedirs(path, exist_ok=True)

    def add(self, name, t):
        self.cur[name] = t
        self.cur_bytes += t.numel() * t.element_size()
        if self.cur_bytes >= self.shard_bytes:
            self.flush()

    def flush(self):
        from safetensors.torch import save_file
        if not self.cur:
            return
        fname = f"model-{len(self.files) + 1:05d}.safetensors"
        save_file(self.cur, os.path.join(self.path, fname), metadata={"format": "pt"})
        for k in self.cur:
            self.weight_map[k] = fname
        self.files.append(fname)
        self.total += self.cur_bytes
        self.cur, self.cur_bytes = {}, 0

    def finish(self, cfg):
        self.flush()
        # Name shards model-0000i-of-0000N as transformers does, now that N is known.
        n = len(self.files)
        rename = {}
        for i, f in enumerate(self.files):
            new = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(os.path.join(self.path, f), os.path.join(self.path, new))
            rename[f] = new
        index = {"metadata": {"total_size": self.total},
                 "weight_map": {k: rename[v] for k, v in sorted(self.weight_map.items())}}
        with open(os.path.join(self.path, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
        with open(os.path.join(self.path, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(self.path, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (gets bf16/ and/or fp8/)")
    ap.add_argument("--format", choices=["bf16", "fp8", "both"], default="both")
    ap.add_argument("--tiny", action="store_true", help="small dims (a quick check)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=5.0, help="shard size in GB (default 5)")
    ap.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("error: make_slice.py needs torch and safetensors", file=sys.stderr)
        sys.exit(2)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = dict(PUBLISHED)
    if args.tiny:
        cfg.update(TINY)
        cfg["max_position_embeddings"] = 163840
    want_bf16 = args.format in ("bf16", "both")
    want_fp8 = args.format in ("fp8", "both")
    specs = tensors(cfg)
    n_params = sum(math.prod(s) for _, s, _ in specs)
    shard = int(args.shard_gb * 1e9) if not args.tiny else int(1e6)  # tiny: several shards too
    writers = {}
    if want_bf16:
        writers["bf16"] = ShardWriter(os.path.join(args.out, "bf16"), shard, 2 * n_params)
    if want_fp8:
        writers["fp8"] = ShardWriter(os.path.join(args.out, "fp8"), shard, n_params)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)
    std = cfg["initializer_range"]
    t0, done = time.time(), 0
    for i, (name, shape, kind) in enumerate(specs):
        if kind == "norm":
            w = torch.ones(shape, dtype=torch.float32, device=dev)
        elif kind == "bias":
            w = 0.1 * torch.randn(shape, generator=gen, device=dev)
        else:
            w = std * torch.randn(shape, generator=gen, device=dev)
        if kind == "linear":
            q, scale, deq = quantize(w)
            if want_fp8:
                writers["fp8"].add(name, q.cpu())
                writers["fp8"].add(name + "_scale_inv", scale.cpu())
            if want_bf16:
                writers["bf16"].add(name, deq.to(torch.bfloat16).cpu())
        else:
            # Router and its bias stay fp32-friendly: the published checkpoint keeps the bias in
            # fp32 and the rest (embeddings, norms, router) in bf16.
            for fmt, wr in writers.items():
                wr.add(name, w.cpu() if kind == "bias" else w.to(torch.bfloat16).cpu())
        done += math.prod(shape)
        if i % 64 == 0 or i == len(specs) - 1:
            el = time.time() - t0
            print(f"  {done / n_params * 100:5.1f}% of {n_params / 1e9:.2f}B params, {el:.0f}s",
                  file=sys.stderr)
    for fmt, wr in writers.items():
        c = dict(cfg)
        if fmt == "fp8":
            c["quantization_config"] = QUANT
        wr.finish(c)
        print(f"{fmt}: {os.path.join(args.out, fmt)}: {len(wr.files)} shards, "
              f"{wr.total / 1e9:.2f} GB")
    print(f"done in {time.time() - t0:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
