#!/usr/bin/env python3
"""Plots the whole-model decode sweep (bench_model_decode JSON lines + bench_hf_decode JSON):
tokens/s against batch, one line per context: helix bf16, helix FP8 weights, transformers bf16.
  python3 bench/plot_model_decode.py bench/data  -> bench/data/model_decode.png"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

d = sys.argv[1] if len(sys.argv) > 1 else "bench/data"
helix = [json.loads(l) for l in open(os.path.join(d, "model_decode_helix_bf16.jsonl")) if l.strip()]
fp8_path = os.path.join(d, "model_decode_helix_fp8.jsonl")
fp8 = [json.loads(l) for l in open(fp8_path) if l.strip()] if os.path.exists(fp8_path) else []
hf = json.load(open(os.path.join(d, "model_decode_hf_bf16.json")))
fig, ax = plt.subplots(figsize=(7, 4.5))
colors = {1024: "tab:blue", 8192: "tab:orange", 32768: "tab:green"}
for ctx, c in colors.items():
    pts = sorted((r["batch"], r["tokens_per_s"]) for r in helix
                 if r["context"] == ctx and r["cuda_graph"])
    ax.plot(*zip(*pts), "o-", color=c, label=f"helix bf16, ctx {ctx // 1024}K")
    pts = sorted((r["batch"], r["tokens_per_s"]) for r in fp8 if r["context"] == ctx)
    if pts:
        ax.plot(*zip(*pts), "s:", color=c, label=f"helix FP8 weights, ctx {ctx // 1024}K")
    pts = sorted((r["batch"], r["tokens_per_s"]) for r in hf
                 if r["context"] == ctx and not r.get("oom"))
    if pts:
        ax.plot(*zip(*pts), "x--", color=c, label=f"transformers bf16, ctx {ctx // 1024}K")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("batch (requests decoded together)")
ax.set_ylabel("decode tokens/s")
ax.set_title("DeepSeek-V3 slice (2 layers, 1 dense + 1 MoE), H200, decode")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
out = os.path.join(d, "model_decode.png")
fig.savefig(out, dpi=120)
print("wrote", out)
