#!/usr/bin/env python3
"""PyTorch eager baseline for bench_mla_decode_bf16, run in the same device command: absorbed
MLA decode as bmm + softmax + bmm on a contiguous bf16 latent cache (no paging), plus the two
ceilings of the GPU measured through torch: the bf16 GEMM rate (8192^3 matmul) and the
device-to-device copy bandwidth (read + write bytes).

    python3 bench/mla_torch_baseline.py --json out.json [--quick]
"""
import argparse
import json

import torch


_flush = None


def median_ms(fn, warmup=3, iters=10):
    """Median of queued runs, like bench_cuda_common.h's QueuedTimer: before each run a read of
    a buffer larger than L2 evicts the last run's data and keeps the GPU busy while the run is
    submitted (a read, not a memset, so the run does not pay for dirty lines' write-back)."""
    global _flush
    if _flush is None:
        _flush = torch.zeros(64 << 20, dtype=torch.float32, device="cuda")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for i in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _flush.sum()  # reads 256 MiB, writes one float
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--heads", type=int, nargs="+", default=[128, 16])
    ap.add_argument("--skip-1m", action="store_true", help="leave out the 1M-token contexts")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(1)

    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    gemm_ms = median_ms(lambda: torch.matmul(a, b), iters=20)
    gemm_tflops = 2 * n**3 / (gemm_ms * 1e-3) / 1e12
    del a, b
    src = torch.empty(2 << 30, dtype=torch.uint8, device=dev).random_(0, 255)
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src), iters=20)
    copy_gbs = 2 * src.numel() / (copy_ms * 1e-3) / 1e9
    del src, dst
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}: bf16 GEMM 8192^3 "
          f"{gemm_tflops:.0f} TFLOP/s, copy {copy_gbs:.0f} GB/s", flush=True)

    L, W = 512, 576
    scale = 192 ** -0.5
    batches, ctxs = ([1, 32], [4096, 65536]) if args.quick else ([1, 8, 32, 64],
                                                                  [1024, 4096, 16384, 65536, 131072])
    shapes = [(B, c) for B in batches for c in ctxs] + ([] if args.quick or args.skip_1m else [(1, 1 << 20), (8, 1 << 20)])
    cases = []
    for H in args.heads:
        for B, ctx in shapes:
            try:
                q = torch.randn(B, H, W, device=dev, dtype=torch.bfloat16)
                kv = torch.randn(B, ctx, W, device=dev, dtype=torch.bfloat16)

                def step():
                    s = torch.bmm(q, kv.transpose(1, 2)).float() * scale
                    p = torch.softmax(s, dim=-1).to(torch.bfloat16)
                    return torch.bmm(p, kv[:, :, :L])

                ms = median_ms(step, iters=args.iters)
                flop = 2 * H * (W + L) * B * ctx
                cases.append({"num_heads": H, "batch": B, "context": ctx, "time_us": ms * 1e3,
                              "tflops": flop / (ms * 1e-3) / 1e12})
                print(f"torch eager H={H} B={B} ctx={ctx}: {ms * 1e3:.1f} us "
                      f"{cases[-1]['tflops']:.1f} TFLOP/s", flush=True)
                del q, kv
            except torch.cuda.OutOfMemoryError:
                print(f"torch eager H={H} B={B} ctx={ctx}: out of memory", flush=True)
            torch.cuda.empty_cache()
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "gemm_tflops": gemm_tflops, "copy_gb_per_s": copy_gbs, "cases": cases},
              open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
