#!/usr/bin/env python3
"""Session 6 (also the fused variant's 13th stamp, mla_mem_s6_fuse_stamps.patch). Summarises the stamps that scripts/device/mla_mem_s5_stamps.patch prints (one launch of the
memory-bound MLA split kernel and its combine): per-CTA phases relative to the first CTA's start.
  python3 scripts/device/mla_mem_s5_stamps.py log.txt"""
import sys
from collections import defaultdict

S = defaultdict(list)
C = defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    if not f:
        continue
    if f[0] == "S" and len(f) in (15, 16, 17):
        v = [int(x) for x in f[2:]]
        # cta, tiles, nseq, then stamps: entry, setup, first tile, 1st loop end, 1st written,
        # next q ready, last loop end, end; then warp 0's cycles in full-barrier waits and in all
        S[int(f[1])].append(([v[0], v[1] >> 8, v[1] & 255] + v[3:] + [0, 0])[:15])
    elif f[0] == "C" and len(f) == 5:
        C[int(f[1])].append([0, 0] + [int(x) for x in f[3:]])


def pct(v):
    v = sorted(v)
    if not v:
        return "-"
    q = lambda p: v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]
    return f"min {v[0]:7.2f} p50 {q(0.5):7.2f} p90 {q(0.9):7.2f} max {v[-1]:7.2f}"


for call in sorted(S):
    rows = S[call]
    t0 = min(r[3] for r in rows)
    us = lambda t: (t - t0) / 1e3
    print(f"== call {call}: {len(rows)} CTAs with tiles, tiles/CTA {pct([r[1] for r in rows])}")
    print("  CTA start        ", pct([us(r[3]) for r in rows]))
    print("  setup done       ", pct([us(r[4]) for r in rows]))
    print("  first tile in    ", pct([us(r[5]) for r in rows]))
    print("  last loop end    ", pct([us(r[9]) for r in rows]))
    print("  CTA end          ", pct([us(r[10]) for r in rows]))
    print("  end - last loop  ", pct([(r[10] - r[9]) / 1e3 for r in rows]))
    if rows[0][13]:
        print("  fused merge end  ", pct([us(r[13]) for r in rows]))
        sp = [r for r in rows if r[14]]
        if sp:
            print("  fused: all pieces seen (last wait's exit)", pct([us(r[14]) for r in sp]))
            print("  fused: wait exit -> CTA end", pct([(r[13] - r[14]) / 1e3 for r in sp]))
        print("  fused: split end -> merges end", f"{(max(r[13] for r in rows) - max(r[10] for r in rows)) / 1e3:.2f} us")
    print("  warp 0 waiting for data, % of its cycles", pct([100.0 * r[11] / max(1, r[12]) for r in rows]))
    print("  first tile -> last loop end, us per tile", pct([(r[9] - r[5]) / 1e3 / max(1, r[1] - 1) for r in rows]))
    two = [r for r in rows if r[2] > 1]
    if two:
        print(f"  {len(two)} CTAs with >1 sequence: tiles", pct([r[1] for r in two]))
        print("    1st loop end   ", pct([us(r[6]) for r in two]))
        print("    merge+write    ", pct([(r[7] - r[6]) / 1e3 for r in two]))
        print("    next q built   ", pct([(r[8] - r[7]) / 1e3 for r in two]))
        print("    CTA end        ", pct([us(r[10]) for r in two]))
    one = [r for r in rows if r[2] == 1]
    if one:
        print(f"  {len(one)} CTAs with 1 sequence: CTA end", pct([us(r[10]) for r in one]))
    if call in C:
        c = C[call]
        print(f"  combine CTAs {len(c)}: entry", pct([us(r[2]) for r in c]))
        print("  combine end      ", pct([us(r[3]) for r in c]))
        print(f"  split end -> combine end: {(max(r[3] for r in c) - max(r[10] for r in rows)) / 1e3:.2f} us")
