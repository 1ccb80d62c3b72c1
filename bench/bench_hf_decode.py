#!/usr/bin/env python3
"""Decode tokens/s of HF transformers (bf16, one GPU) on a DeepSeek-V3 checkpoint (e.g. the slice
of tools/make_slice.py): the baseline of helix's GPU bench.

For each batch B and context C the KV cache is filled with C random entries per layer (decode
cost depends on the cache length, not its values; prefilling 32K tokens through HF would take
longer than the bench; the layout is the one the model writes in a 5-token prefill), then `--steps` decode steps of B tokens are timed after `--warmup`
steps, as transformers' generate runs them (model forward with past_key_values, argmax).
Points that do not fit in GPU memory are reported as "oom".

  python3 bench/bench_hf_decode.py --model /tmp/slice/bf16
  python3 bench/bench_hf_decode.py --model /tmp/tiny/bf16 --batches 1,2 --contexts 64,128
Prints one JSON object per point (stdout) and a table (stderr); --json FILE also writes a list.
"""
import argparse
import json
import sys
import time


def parse_list(s):
    return [int(x) for x in s.split(",") if x]


def make_cache(model, batch, ctx, torch):
    """A cache of ctx random entries per layer, in the layout the model itself writes: a 5-token
    prefill makes the cache, then every layer's keys/values are replaced by random tensors whose
    sequence axis (the one of length 5) has length ctx."""
    dev = next(model.parameters()).device
    plen = 5
    with torch.no_grad():
        ids = torch.randint(2, model.config.vocab_size, (batch, plen), device=dev)
        cache = model(input_ids=ids, use_cache=True).past_key_values
    g = torch.Generator(device=dev)
    g.manual_seed(0)

    def widen(t):
        shape = list(t.shape)
        axis = len(shape) - 2 if shape[-2] == plen else shape.index(plen)
        shape[axis] = ctx
        return torch.randn(shape, generator=g, device=dev, dtype=t.dtype)

    if hasattr(cache, "layers"):  # transformers 5
        for layer in cache.layers:
            layer.keys, layer.values = widen(layer.keys), widen(layer.values)
    else:  # transformers 4: key_cache / value_cache lists
        for i in range(len(cache.key_cache)):
            cache.key_cache[i] = widen(cache.key_cache[i])
            cache.value_cache[i] = widen(cache.value_cache[i])
    torch.cuda.synchronize()
    return cache


def run_point(model, batch, ctx, steps, warmup, torch):
    cache = make_cache(model, batch, ctx, torch)
    dev = next(model.parameters()).device
    vocab = model.config.vocab_size
    ids = torch.randint(2, vocab, (batch, 1), device=dev)
    times = []
    with torch.no_grad():
        for s in range(warmup + steps):
            pos = ctx + s
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(input_ids=ids, past_key_values=cache, use_cache=True,
                        position_ids=torch.full((batch, 1), pos, device=dev, dtype=torch.long),
                        cache_position=torch.tensor([pos], device=dev))
            ids = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            cache = out.past_key_values
            torch.cuda.synchronize()
            if s >= warmup:
                times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    return {"step_ms": step * 1e3, "tokens_per_s": batch / step,
            "mean_step_ms": sum(times) / len(times) * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint folder (bf16 or fp32)")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--contexts", default="1024,8192,32768")
    ap.add_argument("--steps", type=int, default=8, help="timed decode steps per point")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    try:
        import torch
        from transformers import DeepseekV3ForCausalLM
    except ImportError as e:
        print(f"error: bench_hf_decode.py needs torch and transformers ({e})", file=sys.stderr)
        sys.exit(2)
    if not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        sys.exit(2)
    t0 = time.time()
    model = DeepseekV3ForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16,
                                                  attn_implementation=args.attn,
                                                  device_map="cuda").eval()
    print(f"loaded {args.model} in {time.time() - t0:.0f}s on {torch.cuda.get_device_name()}",
          file=sys.stderr)
    results = []
    for b in parse_list(args.batches):
        for c in parse_list(args.contexts):
            r = {"engine": "transformers", "version": __import__("transformers").__version__,
                 "device": torch.cuda.get_device_name(), "batch": b, "context": c}
            try:
                r.update(run_point(model, b, c, args.steps, args.warmup, torch))
            except torch.cuda.OutOfMemoryError:
                r["oom"] = True
            torch.cuda.empty_cache()
            results.append(r)
            print(json.dumps(r), flush=True)
    print(f"{'batch':>5} {'context':>7} {'step ms':>9} {'tokens/s':>10}", file=sys.stderr)
    for r in results:
        if r.get("oom"):
            print(f"{r['batch']:>5} {r['context']:>7} {'oom':>9} {'-':>10}", file=sys.stderr)
        else:
            print(f"{r['batch']:>5} {r['context']:>7} {r['step_ms']:>9.2f} {r['tokens_per_s']:>10.1f}",
                  file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
