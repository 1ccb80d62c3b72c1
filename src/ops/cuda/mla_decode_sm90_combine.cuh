#pragma once
// The combine kernel of the sm90 MLA decode (mla_decode_sm90.cuh): merges the split partials.
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_sm90.cuh"

namespace helix::cuda::mla_sm90 {

// Merges the partials of sequences spanning several CTAs; writes the empty sequences. Grid
// (B, H), kThreads threads, dynamic shared memory 8 bytes per CTA of a group; a programmatic
// dependent of the split kernel. The pieces of sequence b come from the walks (cta_role): each
// pair whose range meets b's units gives up to two (forward [lo, meet), backward [meet, hi), the
// meet point written by the split kernel), the solo share one. Every CTA waits for the split
// kernel (so the combine's completion implies the split's: the next launch's claims see the
// words zeroed). Thread = (partial group, 4-column chunk), each keeping 8 partial loads in
// flight; small batches (each sequence split 16-66 ways) take 512 threads: 4 groups of partials
// merged in shared memory, so a 32-way split costs one round of L2 latency instead of 8 (batch
// 1 x 16K, H200: 38 -> 32 us); larger batches take 128 threads (more CTAs per SM).
template <int kThreads>
__global__ void __launch_bounds__(kThreads) mla_sm90_combine_kernel(const Args a) {
  using namespace mla_combine;
  constexpr int kBatch = 8;
  extern __shared__ float mla_combine_dyn[];
  __shared__ float s_red[kThreads / 32];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / kHeads, hl = h % kHeads;
  float before = 0.f, all = 0.f;  // unit counts (exact in fp32 below 2^24)
  for (int i = threadIdx.x; i < a.batch; i += kThreads) {
    const float units = static_cast<float>((seq_tokens(a, i) + kUnit - 1) / kUnit);
    all += units;
    if (i < b) before += units;
  }
  const int s_b = static_cast<int>(block_reduce<kThreads>(before, false, s_red));
  const int total = static_cast<int>(block_reduce<kThreads>(all, false, s_red));
  const int mine = (seq_tokens(a, b) + kUnit - 1) / kUnit, e_b = s_b + mine;
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  float* out_f = static_cast<float*>(a.out) + orow * kL;
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out) + orow * kL;
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  if (mine == 0) {
    for (int c = threadIdx.x; c < kL; c += kThreads) {
      if (a.out_bf16)
        out_h[c] = __float2bfloat16(0.f);
      else
        out_f[c] = 0.f;
    }
    if (threadIdx.x == 0) a.lse[orow] = -INFINITY;
    return;
  }
  const int ctas = active_ctas<1>(total, a.ctas_per_group), pairs = pair_count(ctas);
  const int j_lo = cta_of(s_b, total, ctas), j_hi = cta_of(e_b - 1, total, ctas);  // shares
  const int p_lo = j_lo / 2, p_hi = j_hi / 2 < pairs - 1 ? j_hi / 2 : pairs - 1;
  const int n_pairs = p_hi >= p_lo ? p_hi - p_lo + 1 : 0;
  const int solo_lo = j_lo > 2 * pairs ? j_lo : 2 * pairs;  // solo shares solo_lo..j_hi
  const int n = 2 * n_pairs + (j_hi >= solo_lo ? j_hi - solo_lo + 1 : 0);  // pieces (<= ctas)
  const int* meets = meet_points(a);
  float* s_w = mla_combine_dyn;                                             // [n] weights
  int* s_row = reinterpret_cast<int*>(mla_combine_dyn + a.ctas_per_group);  // [n] partial rows
  float mx = -INFINITY, pieces = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    int lo, hi, cta, slot;
    if (i < 2 * n_pairs) {
      const int p = p_lo + i / 2;
      const int r_lo = cta_begin(2 * p, total, ctas), r_hi = cta_begin(2 * p + 2, total, ctas);
      const int m = meets[static_cast<int64_t>(group) * a.ctas_per_group + p];
      if (i & 1) {  // backward: [m, r_hi)
        lo = m;
        hi = r_hi;
        cta = p + pairs;
        slot = e_b >= r_hi ? 1 : 0;
      } else {
        lo = r_lo;
        hi = m;
        cta = p;
        slot = s_b <= r_lo ? 0 : 1;
      }
    } else {
      cta = solo_lo + i - 2 * n_pairs;  // share = cta
      lo = cta_begin(cta, total, ctas);
      hi = cta_begin(cta + 1, total, ctas);
      slot = s_b <= lo ? 0 : 1;
    }
    float l = -INFINITY;
    int row = 0;
    if ((lo > s_b ? lo : s_b) < (hi < e_b ? hi : e_b)) {  // the piece holds units of b
      row = ((group * a.ctas_per_group + cta) * 2 + slot) * kHeads + hl;
      l = a.part_lse[row];
      pieces += 1.f;
    }
    s_w[i] = l;
    s_row[i] = row;
    mx = fmaxf(mx, l);
  }
  // One piece: its CTA held all of b and wrote the final result.
  if (block_reduce<kThreads>(pieces, false, s_red) < 2.f) return;
  mx = block_reduce<kThreads>(mx, true, s_red);
  float sum = 0.f;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const float w = __expf(s_w[i] - mx);  // 0 for -inf
    s_w[i] = w;
    sum += w;
  }
  sum = block_reduce<kThreads>(sum, false, s_red);  // barrier: s_w complete
  const float inv = 1.f / sum;
  constexpr int kGroups = kThreads / (kL / 4);
  static_assert(kGroups >= 1 && kGroups * (kL / 4) == kThreads, "whole partial groups");
  __shared__ float4 s_part[kGroups > 1 ? kGroups - 1 : 1][kL / 4];
  const int cc = threadIdx.x % (kL / 4), pg = threadIdx.x / (kL / 4);
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int i0 = pg; i0 < n; i0 += kGroups * kBatch) {
    float4 v[kBatch];
    float w[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int i = i0 + k * kGroups;
      w[k] = i < n ? s_w[i] : 0.f;
      v[k] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (w[k] != 0.f)  // zero weight: an empty piece, never read
        v[k] = *reinterpret_cast<const float4*>(a.part_out + static_cast<int64_t>(s_row[i]) * kL +
                                                4 * cc);
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) fma4(o, w[k], v[k]);
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
  if (threadIdx.x == 0) a.lse[orow] = mx + __logf(sum);
}
constexpr int kCombineSmallBatch = 4;  // batches up to this take the 512-thread combine

}  // namespace helix::cuda::mla_sm90
