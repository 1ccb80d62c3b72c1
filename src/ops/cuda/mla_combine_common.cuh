#pragma once
// Shared by the split MLA decode kernels (mla_decode_bf16_kernel.cuh, mla_decode_mem*.cu,
// mla_decode_sm90*.cuh): the partition of a batch's tiles over the CTAs of a head group, and the
// combine that merges the per-CTA partials of sequences spanning several CTAs. The kernels differ
// only in tile size, head group, thread count and how the merge batches its loads; those are the
// template knobs here.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_decode_bf16_args.h"
#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda::mla_combine {

using mla_bf16::Args;

// ---- the tile partition (the split kernels and the combine must agree on it) ----
__device__ __forceinline__ int seq_tokens(const Args& a, int b) {
  const int len = a.seq_lens[b];
  const int cap = a.max_blocks_per_seq * a.block_size;
  const int kept = (len < 0 ? 0 : (len > cap ? cap : len)) - a.seq_len_trim;
  return kept < 0 ? 0 : kept;
}
__device__ __forceinline__ int cta_begin(int64_t c, int64_t total, int ctas) {
  return static_cast<int>(c * total / ctas);
}
// CTAs that get work: all of them, but at least kMinTiles tiles each (a split's fixed cost, the
// query load and the partial write, is about a tile's work).
// (kMin: the sm90 kernel partitions 128-token units, kMin 1.)
constexpr int kMinTiles = 2;
template <int kMin = kMinTiles>
__device__ __forceinline__ int active_ctas(int total, int ctas) {
  const int want = (total + kMin - 1) / kMin;
  return want < ctas ? (want > 0 ? want : 1) : ctas;
}
// The last i in [0, last] with v[i] <= x, by binary search (v ascending; 0 when even v[0] > x):
// the sequence of a tile in prefix sums, the CTA of a tile in range starts.
__device__ __forceinline__ int last_at_most(const int* v, int last, int x) {
  int lo = 0, hi = last;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (v[mid] <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}
// The CTA whose range holds tile x (the last c with cta_begin(c) <= x); total > 0.
__device__ __forceinline__ int cta_of(int64_t x, int64_t total, int ctas) {
  return static_cast<int>(((x + 1) * ctas - 1) / total);
}

// Warp 0 of a split kernel: s_cum[b] = the tiles of the sequences before b, b in [0, batch], 32
// sequences per step; with kLens, s_len[b] = the tokens of sequence b (else s_len is unused). With
// kSeqCost > 0 also s_vcum[b]: the same in "virtual" tiles, where each non-empty sequence counts
// kSeqCost tiles more (its fixed cost in a CTA: the query build, the merge and the write), the
// units the CTAs' shares are cut in (cta_tile_range).
template <int kTile, bool kLens = false, int kSeqCost = 0>
__device__ __forceinline__ void tile_prefix_sums(const Args& a, int* s_cum, int* s_len, int lane,
                                                 int* s_vcum = nullptr) {
  int carry = 0, vcarry = 0;
  if (lane == 0) s_cum[0] = 0;
  if (kSeqCost > 0 && lane == 0) s_vcum[0] = 0;
  for (int base = 0; base < a.batch; base += 32) {
    const int b = base + lane;
    const int len = b < a.batch ? seq_tokens(a, b) : 0;
    if (kLens && b < a.batch) s_len[b] = len;
    int v = (len + kTile - 1) / kTile;
    int w = v > 0 ? v + kSeqCost : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int u = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += u;
      if constexpr (kSeqCost > 0) {
        const int uw = __shfl_up_sync(0xffffffffu, w, o);
        if (lane >= o) w += uw;
      }
    }
    if (b < a.batch) s_cum[b + 1] = carry + v;
    carry += __shfl_sync(0xffffffffu, v, 31);
    if constexpr (kSeqCost > 0) {
      if (b < a.batch) s_vcum[b + 1] = vcarry + w;
      vcarry += __shfl_sync(0xffffffffu, w, 31);
    }
  }
}
// A split CTA's contiguous share of its group's tiles: [t_begin, t_end), whose first tile is tile
// ck of sequence cb.
struct TileRange {
  int t_begin = 0, t_end = 0, cb = 0, ck = 0;
};
// The range of CTA cta once s_cum is complete; false when it has no tiles. kSeqCost > 0: the CTAs
// share the virtual tiles (s_vcum, above) evenly, so a CTA that holds pieces of several sequences
// gets fewer real tiles; its range is the real tiles of its virtual range.
template <int kMin = kMinTiles, int kSeqCost = 0>
__device__ __forceinline__ bool cta_tile_range(const Args& a, const int* s_cum, int cta,
                                               TileRange& r, const int* s_vcum = nullptr) {
  const int total = kSeqCost > 0 ? s_vcum[a.batch] : s_cum[a.batch];
  if (total == 0) return false;
  const int ctas = active_ctas<kMin>(total, a.ctas_per_group);
  if (cta >= ctas) return false;
  r.t_begin = cta_begin(cta, total, ctas);
  r.t_end = cta_begin(cta + 1, total, ctas);
  if constexpr (kSeqCost > 0) {
    // virtual tile x -> the real tile it stands for: the first real tile of its sequence for the
    // kSeqCost virtual ones at the sequence's start
    auto to_real = [&](int x) {
      const int lo = last_at_most(s_vcum, a.batch, x);
      if (lo == a.batch) return s_cum[a.batch];
      const int k = x - s_vcum[lo] - kSeqCost;
      return s_cum[lo] + (k > 0 ? k : 0);
    };
    r.t_begin = to_real(r.t_begin);
    r.t_end = to_real(r.t_end);
  }
  if (r.t_end <= r.t_begin) return false;
  while (s_cum[r.cb + 1] <= r.t_begin) ++r.cb;
  r.ck = r.t_begin - s_cum[r.cb];
  return true;
}

// ---- the partials' layout: the split kernels write it, the combines read it ----
// Where a split CTA leaves its state for sequence cb when the sequence's tiles do not all lie in
// the CTA's range (starting at tile t_begin): partial slot 0 when it is the range's first
// sequence, 1 when it is the last.
__device__ __forceinline__ int partial_slot(const int* s_cum, int cb, int t_begin) {
  return s_cum[cb] <= t_begin ? 0 : 1;
}
// The first of the hg rows of CTA cta's partial slot in head group `group` (part_lse entries,
// part_out rows of L floats).
__device__ __forceinline__ int64_t partial_row(const Args& a, int group, int cta, int slot,
                                               int hg) {
  return ((static_cast<int64_t>(group) * a.ctas_per_group + cta) * 2 + slot) * hg;
}
// The natural-log LSE of a row's online-softmax state kept in log2 units (running max m, sum d).
__device__ __forceinline__ float lse_from_log2(float m, float d) {
  return (m + log2f(d)) * 0.6931471805599453f;
}

// ---- the combine ----
// Sum (is_max false) or max over the CTA's kThreads threads; every thread gets the result. s_red:
// kThreads / 32 floats. Starts with a barrier, so back-to-back calls may share s_red.
template <int kThreads>
__device__ __forceinline__ float block_reduce(float v, bool is_max, float* s_red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s_red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = s_red[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) v = is_max ? fmaxf(v, s_red[w]) : v + s_red[w];
  return v;
}

__device__ __forceinline__ void store4(float* out_f, __nv_bfloat16* out_h, bool bf16, int col,
                                       float4 o) {
  if (bf16) {
    *reinterpret_cast<__nv_bfloat162*>(out_h + col) = __floats2bfloat162_rn(o.x, o.y);
    *reinterpret_cast<__nv_bfloat162*>(out_h + col + 2) = __floats2bfloat162_rn(o.z, o.w);
  } else {
    *reinterpret_cast<float4*>(out_f + col) = o;
  }
}
__device__ __forceinline__ void fma4(float4& o, float w, const float4& v) {
  o.x += w * v.x;
  o.y += w * v.y;
  o.z += w * v.z;
  o.w += w * v.w;
}
__device__ __forceinline__ void scale4(float4& o, float s) {
  o.x *= s;
  o.y *= s;
  o.z *= s;
  o.w *= s;
}

// Merges the partials of sequences that span several CTAs, and writes the empty sequences, for
// the CTA (b, h) of a grid (B, H) of kThreads threads; dynamic shared memory 8 bytes per CTA of a
// group. The partials' weights are computed in parallel first, so the loads of the column merge
// are independent. Knobs:
// - L: output columns, HG: heads per split CTA (the partial row layout), kTile: tokens per tile.
// - kBatch == 0: each thread walks 4-column chunks and all partials of each; kBatch > 0: thread =
//   (partial group, 4-column chunk) with kThreads / (L / 4) groups, each keeping kBatch partial
//   loads in flight, the groups' sums meeting in shared memory (needs kThreads a multiple of L/4).
// - kPdl: launched as a programmatic dependent of the split kernel: reads seq_lens (an input, not
//   the split kernel's) before waiting for it, and a sequence one CTA held returns without waiting.
// - kSeqCost: the split kernel's (cta_tile_range): the partition is in virtual tiles.
template <int kThreads, int L, int HG, int kTile, int kBatch, bool kPdl, int kMin = kMinTiles,
          int kSeqCost = 0>
__device__ __forceinline__ void combine_partials(const Args& a) {
  extern __shared__ float mla_combine_dyn[];
  __shared__ float s_red[kThreads / 32];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / HG, hl = h % HG;
  float before = 0.f, all = 0.f;  // tile counts (exact in fp32 below 2^24)
  for (int i = threadIdx.x; i < a.batch; i += kThreads) {
    const int t = (seq_tokens(a, i) + kTile - 1) / kTile;
    const float tiles = static_cast<float>(t > 0 ? t + kSeqCost : 0);  // virtual tiles
    all += tiles;
    if (i < b) before += tiles;
  }
  const int tiles_before = static_cast<int>(block_reduce<kThreads>(before, false, s_red));
  const int total = static_cast<int>(block_reduce<kThreads>(all, false, s_red));
  const int mine = (seq_tokens(a, b) + kTile - 1) / kTile;
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  float* out_f = static_cast<float*>(a.out) + orow * L;
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out) + orow * L;
  if (mine == 0) {
    if constexpr (kPdl) ptx::grid_dep_wait();
    for (int c = threadIdx.x; c < L; c += kThreads) {
      if (a.out_bf16)
        out_h[c] = __float2bfloat16(0.f);
      else
        out_f[c] = 0.f;
    }
    if (threadIdx.x == 0) a.lse[orow] = -INFINITY;
    return;
  }
  const int ctas = active_ctas<kMin>(total, a.ctas_per_group);
  const int first = tiles_before + kSeqCost;  // the virtual index of the first real tile
  const int c_lo = cta_of(first, total, ctas);
  const int c_hi = cta_of(first + mine - 1, total, ctas);
  if (c_lo == c_hi) return;  // one CTA held it all and wrote the final result
  if constexpr (kPdl) ptx::grid_dep_wait();
  const int n = c_hi - c_lo + 1;
  float* s_w = mla_combine_dyn;                                             // [n] weights
  int* s_row = reinterpret_cast<int*>(mla_combine_dyn + a.ctas_per_group);  // [n] partial rows
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const int c = c_lo + i;
    float l = -INFINITY;
    int row = 0;
    if (cta_begin(c, total, ctas) < cta_begin(c + 1, total, ctas)) {  // a CTA with tiles
      // slot 1: the sequence is not the first one of CTA c_lo (its range starts in an earlier one)
      const int slot = (i == 0 && cta_begin(c, total, ctas) < tiles_before) ? 1 : 0;
      row = ((group * a.ctas_per_group + c) * 2 + slot) * HG + hl;  // partial_row in int
      l = a.part_lse[row];
    }
    s_w[i] = l;
    s_row[i] = row;
    mx = fmaxf(mx, l);
  }
  mx = block_reduce<kThreads>(mx, true, s_red);
  float sum = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float w = __expf(s_w[i] - mx);  // 0 for -inf
    s_w[i] = w;
    sum += w;
  }
  sum = block_reduce<kThreads>(sum, false, s_red);  // barrier: s_w complete
  const float inv = 1.f / sum;
  if constexpr (kBatch == 0) {
    for (int col = 4 * threadIdx.x; col < L; col += 4 * kThreads) {
      float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
      for (int i = 0; i < n; ++i) {
        const float w = s_w[i];
        if (w == 0.f) continue;  // zero weight: an empty slot, never read
        fma4(o, w,
             *reinterpret_cast<const float4*>(a.part_out + static_cast<int64_t>(s_row[i]) * L +
                                              col));
      }
      scale4(o, inv);
      store4(out_f, out_h, a.out_bf16, col, o);
    }
  } else {
    constexpr int kGroups = kThreads / (L / 4);
    static_assert(kGroups >= 1 && kGroups * (L / 4) == kThreads, "whole partial groups");
    __shared__ float4 s_part[kGroups > 1 ? kGroups - 1 : 1][L / 4];
    const int cc = threadIdx.x % (L / 4), pg = threadIdx.x / (L / 4);
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int i0 = pg; i0 < n; i0 += kGroups * kBatch) {
      float4 v[kBatch];
      float w[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * kGroups;
        w[u] = i < n ? s_w[i] : 0.f;
        v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (w[u] != 0.f)  // zero weight: an empty slot, never read
          v[u] = *reinterpret_cast<const float4*>(a.part_out + static_cast<int64_t>(s_row[i]) * L +
                                                  4 * cc);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) fma4(o, w[u], v[u]);
    }
    if (kGroups > 1) {
      if (pg > 0) s_part[pg - 1][cc] = o;
      __syncthreads();
      if (pg > 0) return;
#pragma unroll
      for (int k = 0; k < kGroups - 1; ++k) fma4(o, 1.f, s_part[k][cc]);
    }
    scale4(o, inv);
    store4(out_f, out_h, a.out_bf16, 4 * cc, o);
  }
  if (threadIdx.x == 0) a.lse[orow] = mx + __logf(sum);
}

// combine_partials for a kPdl dependent in one L2 round trip after the split kernel when a
// sequence has at most kGroups x kUnroll pieces (kGroups = kThreads / (L / 4) threads per
// 4-column chunk, in adjacent lanes): the pieces' partial rows are found before the PDL wait
// (index math on seq_lens only), then each thread loads the lse and the values of all its pieces
// at once (combine_partials loads the lse first, then the values: two round trips, and four
// block barriers between them); the max and the sums meet by shuffles among the chunk's lanes,
// with no block barrier after the wait. More pieces, and the empty sequences: combine_partials.
// kSeqCost: the split's virtual tiles a piece costs (cta_tile_range), 0 for the sm90 kernel.
// kVolatileLoads: the partial loads as volatile asm, so every one is issued before the first is
// used (the sm90 combine measured ptxas waiting for the lse first without it; the memory-bound
// kernel's combine, with 4 lanes a chunk, was measured with plain loads).
template <int kThreads, int L, int HG, int kTile, int kUnroll, int kMin = kMinTiles,
          int kSeqCost = 0, bool kVolatileLoads = true>
__device__ __forceinline__ void combine_one_trip(const Args& a) {
  constexpr int kGroups = kThreads / (L / 4);
  static_assert(kGroups >= 1 && kGroups <= 32 && kGroups * (L / 4) == kThreads &&
                    (kGroups & (kGroups - 1)) == 0,
                "whole chunks, a power-of-two lane group");
  __shared__ float s_red[kThreads / 32];
  __shared__ int s_row[kGroups * kUnroll];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / HG, hl = h % HG;
  float before = 0.f, all = 0.f;  // (virtual) tile counts (exact in fp32 below 2^24)
  for (int i = threadIdx.x; i < a.batch; i += kThreads) {
    const int t = (seq_tokens(a, i) + kTile - 1) / kTile;
    float tiles = static_cast<float>(t);
    if constexpr (kSeqCost > 0) tiles = static_cast<float>(t > 0 ? t + kSeqCost : 0);
    all += tiles;
    if (i < b) before += tiles;
  }
  const int tiles_before = static_cast<int>(block_reduce<kThreads>(before, false, s_red));
  const int total = static_cast<int>(block_reduce<kThreads>(all, false, s_red));
  const int mine = (seq_tokens(a, b) + kTile - 1) / kTile;
  const int ctas = active_ctas<kMin>(total, a.ctas_per_group);
  const int first = tiles_before + kSeqCost;  // the (virtual) index of the first real tile
  const int c_lo = mine > 0 ? cta_of(first, total, ctas) : 0;
  const int n = mine > 0 ? cta_of(first + mine - 1, total, ctas) - c_lo + 1 : 0;
  if (n == 1) return;  // one CTA held it all and wrote the final result
  if (mine == 0 || n > kGroups * kUnroll) {
    combine_partials<kThreads, L, HG, kTile, 8, true, kMin, kSeqCost>(a);
    return;
  }
  if (threadIdx.x < n) {  // as combine_partials (partial_row in int); -1: a CTA without tiles
    const int c = c_lo + threadIdx.x;
    const bool tiles = cta_begin(c, total, ctas) < cta_begin(c + 1, total, ctas);
    const int slot = threadIdx.x == 0 && cta_begin(c, total, ctas) < tiles_before ? 1 : 0;
    s_row[threadIdx.x] = tiles ? ((group * a.ctas_per_group + c) * 2 + slot) * HG + hl : -1;
  }
  __syncthreads();
  ptx::grid_dep_wait();
  const int cc = threadIdx.x / kGroups, pg = threadIdx.x % kGroups;
  float4 v[kUnroll];
  float l[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int i = pg + u * kGroups;
    const int row = i < n ? s_row[i] : -1;
    l[u] = -INFINITY;
    v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row >= 0) {
      const float* pv = a.part_out + static_cast<int64_t>(row) * L + 4 * cc;
      if constexpr (kVolatileLoads) {
        asm volatile("ld.global.f32 %0, [%1];\n" : "=f"(l[u]) : "l"(a.part_lse + row));
        asm volatile("ld.global.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                     : "=f"(v[u].x), "=f"(v[u].y), "=f"(v[u].z), "=f"(v[u].w)
                     : "l"(pv));
      } else {
        l[u] = a.part_lse[row];
        v[u] = *reinterpret_cast<const float4*>(pv);
      }
    }
  }
  float mx = l[0];
#pragma unroll
  for (int u = 1; u < kUnroll; ++u) mx = fmaxf(mx, l[u]);
#pragma unroll
  for (int m = 1; m < kGroups; m <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, m));
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  float sum = 0.f;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const float w = __expf(l[u] - mx);  // 0 for -inf (no piece there): its v is 0
    sum += w;
    fma4(o, w, v[u]);
  }
  // the kGroups lanes of a chunk hold disjoint pieces: their sums are the whole
#pragma unroll
  for (int m = 1; m < kGroups; m <<= 1) {
    sum += __shfl_xor_sync(0xffffffffu, sum, m);
    o.x += __shfl_xor_sync(0xffffffffu, o.x, m);
    o.y += __shfl_xor_sync(0xffffffffu, o.y, m);
    o.z += __shfl_xor_sync(0xffffffffu, o.z, m);
    o.w += __shfl_xor_sync(0xffffffffu, o.w, m);
  }
  if (pg != 0) return;
  scale4(o, 1.f / sum);
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  store4(static_cast<float*>(a.out) + orow * L, static_cast<__nv_bfloat16*>(a.out) + orow * L,
         a.out_bf16, 4 * cc, o);
  if (threadIdx.x == 0) a.lse[orow] = mx + __logf(sum);
}

}  // namespace helix::cuda::mla_combine
