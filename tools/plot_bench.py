#!/usr/bin/env python3
"""Plots the benchmark sweeps in bench/data/*.json (written with each bench's --json flag) to
PNG files next to them:

    python3 tools/plot_bench.py [bench/data]

Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def plot_attention_layer(d):
    j = load(d, "bench_attention_layer.json")
    if not j:
        return
    r = j["results"]
    x = [e["context"] for e in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [e["absorbed_ms"] for e in r], "o-", label="absorbed (cache [c, k_pe])")
    ax.plot(x, [e["naive_ms"] for e in r], "s-", label="naive (decompress K, V per head)")
    ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="decode step (ms)",
           title=f"DeepSeek-V3 MLA layer, CPU ({j['cpu'][:28]})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(d, "attention_layer.png"), dpi=110)


def plot_helix(d):
    j = load(d, "bench_helix_attention.json")
    if not j:
        return
    r = j["results"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for cp in sorted({e["cp"] for e in r}):
        rows = [e for e in r if e["cp"] == cp]
        x = [e["context"] for e in rows]
        a1.plot(x, [e["step_ms"] for e in rows], "o-", label=f"cp={cp}")
        a2.plot(x, [e["bytes_sent_per_step_rank0"] for e in rows], "o-", label=f"cp={cp}")
    a1.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="attention step (ms)",
           title=f"Helix attention step, {j['cores']} CPU cores")
    a2.set(xscale="log", xlabel="context (tokens)", ylabel="bytes sent per step (rank 0)",
           title="Helix traffic is flat in the context")
    a2.set_ylim(bottom=0)
    a1.legend()
    a2.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(d, "helix_attention.png"), dpi=110)


def plot_mla_cuda(d):
    j = load(d, "bench_mla_decode_cuda.json")
    if not j:
        return
    cases = j["cases"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = sorted({(c["num_heads"], c["batch"], c.get("kernel", "auto")) for c in cases})
    for h, b, k in keys:
        rows = sorted((c for c in cases if (c["num_heads"], c["batch"], c.get("kernel", "auto")) == (h, b, k)),
                      key=lambda c: c["context"])
        if b not in (1, 32):
            continue
        ax.plot([c["context"] for c in rows], [c["fraction_of_copy"] for c in rows],
                "o-" if k != "fma" else "x--", label=f"{k} H={h} batch={b}")
    ax.set(xscale="log", xlabel="context (tokens)", ylabel="fraction of copy bandwidth",
           title=f"mla_decode_cuda on {j.get('device', 'GPU')}")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(d, "mla_decode_cuda.png"), dpi=110)


def plot_mla_bf16(d, benches=("bench_mla_decode_bf16.json",), torch="mla_torch_baseline.json",
                  png="mla_decode_bf16.png"):
    """bench_mla_decode_bf16 JSON files of one device command (+ the PyTorch baseline of the same
    command): left, 128 heads in TFLOP/s against the measured bf16 GEMM rate; right, 16 heads as a
    fraction of the measured copy bandwidth, bf16 and FP8 KV."""
    js = [x for x in (load(d, f) for f in benches) if x]
    if not js:
        return
    j = js[0]
    t = load(d, torch) or {"cases": []}
    cases = [c for x in js for c in x["cases"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for b, style in ((1, ":"), (8, "-."), (32, "-"), (64, "--")):
        for kv, mark in (("bf16", "o"), ("fp8_e4m3", "s")):
            rows = sorted((c for c in cases if c["num_heads"] == 128 and c["batch"] == b
                           and c["kv_dtype"] == kv), key=lambda c: c["context"])
            if rows:
                a1.plot([c["context"] for c in rows], [c["tflops"] for c in rows], mark + style,
                        label=f"{kv} B={b}", ms=4)
            rows = sorted((c for c in cases if c["num_heads"] == 16 and c["batch"] == b
                           and c["kv_dtype"] == kv), key=lambda c: c["context"])
            if rows:
                a2.plot([c["context"] for c in rows], [c["fraction_of_copy"] for c in rows],
                        mark + style, label=f"{kv} B={b}", ms=4)
        rows = sorted((c for c in t["cases"] if c["num_heads"] == 128 and c["batch"] == b),
                      key=lambda c: c["context"])
        if rows:
            a1.plot([c["context"] for c in rows], [c["tflops"] for c in rows], "x" + style,
                    color="gray", label=f"torch eager B={b}", ms=4)
    if j.get("gemm_tflops"):
        a1.axhline(j["gemm_tflops"], color="k", lw=0.8)
        a1.text(1024, j["gemm_tflops"] * 0.95, "measured bf16 GEMM", fontsize=7, va="top")
    a1.axhline(450, color="r", lw=0.6, ls="--")
    a1.set(xscale="log", xlabel="context (tokens)", ylabel="TFLOP/s (2 H (576 + 512) per token)",
           title=f"128 heads, {j.get('device', 'GPU')}")
    a2.axhline(0.8, color="r", lw=0.6, ls="--")
    a2.set(xscale="log", xlabel="context (tokens)", ylabel="KV bytes / time / copy bandwidth",
           title=f"16 heads (copy {j['copy_gb_per_s']:.0f} GB/s)")
    a2.set_ylim(0, 1.6)
    a1.legend(fontsize=6, ncol=2)
    a2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(d, png), dpi=110)


def plot_mla_sm90(d):
    """bench_mla_decode_bf16_sm90_h128.json, the mma.sync kernel and PyTorch eager from the same
    device command: 128 heads, bf16 KV, TFLOP/s against the measured bf16 GEMM rate."""
    j = load(d, "bench_mla_decode_bf16_sm90_h128.json")
    if not j:
        return
    m = load(d, "bench_mla_decode_bf16_mmasync_h128.json") or {"cases": []}
    t = load(d, "mla_torch_baseline_h128.json") or {"cases": []}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for b, style in ((1, ":"), (8, "-."), (32, "-"), (64, "--")):
        for src, mark, name, color in ((j, "o", "sm90", "C0"), (m, "s", "mma.sync", "C1"),
                                       (t, "x", "torch eager", "gray")):
            rows = sorted((c for c in src["cases"] if c["num_heads"] == 128 and c["batch"] == b
                           and c.get("kv_dtype", "bf16") == "bf16"), key=lambda c: c["context"])
            if rows:
                ax.plot([c["context"] for c in rows], [c["tflops"] for c in rows], mark + style,
                        color=color, label=f"{name} B={b}", ms=4)
    g = t.get("gemm_tflops") or j.get("gemm_tflops")
    if g:
        ax.axhline(g, color="k", lw=0.8)
        ax.text(1024, g * 0.97, f"measured bf16 GEMM {g:.0f}", fontsize=7, va="top")
    ax.axhline(450, color="r", lw=0.6, ls="--")
    ax.set(xscale="log", xlabel="context (tokens)", ylabel="TFLOP/s (2 H (576 + 512) per token)",
           title=f"MLA decode, 128 heads, bf16 KV, {j.get('device', 'GPU')}")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(os.path.join(d, "mla_decode_sm90_h128.png"), dpi=110)


def plot_serve(d):
    j = load(d, "bench_serve.json")
    if not j:
        return
    r = j["results"]
    x = [e["concurrency"] for e in r]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(x, [e["tokens_per_s"] for e in r], "o-")
    a1.set(xscale="log", xlabel="concurrent streaming clients", ylabel="generated tokens / s",
           title=f"helix serve, {j['model']}, {j['cores']} CPU cores")
    a2.plot(x, [e["ttft_ms_p50"] for e in r], "o-", label="p50")
    a2.plot(x, [e["ttft_ms_p99"] for e in r], "s--", label="p99")
    a2.set(xscale="log", yscale="log", xlabel="concurrent streaming clients",
           ylabel="time to first token (ms)", title=f"max_tokens {j['max_tokens']}")
    a2.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(d, "serve.png"), dpi=110)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "bench/data"
    plot_attention_layer(d)
    plot_helix(d)
    plot_mla_cuda(d)
    plot_mla_bf16(d)
    # Session 4's acceptance run of the merged tree (scripts/mla_accept.sh, one device call).
    plot_mla_bf16(d, ("bench_mla_decode_bf16_s4_accept_h128.json",
                      "bench_mla_decode_bf16_s4_accept_h16.json"),
                  "mla_torch_baseline_s4_accept_h128.json", "mla_decode_s4_accept.png")
    # Session 5's (the same script, the tree with the lat, mem and sm90 changes of that session).
    plot_mla_bf16(d, ("bench_mla_decode_bf16_s5_accept_h128.json",
                      "bench_mla_decode_bf16_s5_accept_h16.json"),
                  "mla_torch_baseline_s5_accept_h128.json", "mla_decode_s5_accept.png")
    # Session 6's (queued timing: L2 flushed, GPU busy at submit; the h128, h16, fp8, fp8h changes).
    plot_mla_bf16(d, ("bench_mla_decode_bf16_s6_accept_h128.json",
                      "bench_mla_decode_bf16_s6_accept_h16.json"),
                  "mla_torch_baseline_s6_accept_h128.json", "mla_decode_s6_accept.png")
    # Session 7's (the same call also ran device_verify.sh).
    plot_mla_bf16(d, ("bench_mla_decode_bf16_s7_accept_h128.json",
                      "bench_mla_decode_bf16_s7_accept_h16.json"),
                  "mla_torch_baseline_s7_accept_h128.json", "mla_decode_s7_accept.png")
    plot_mla_sm90(d)
    plot_serve(d)
    print("wrote", [f for f in sorted(os.listdir(d)) if f.endswith(".png")])


if __name__ == "__main__":
    main()
