#pragma once
// The combine kernel of the sm90 MLA decode (mla_decode_sm90.cuh): merges the split partials.
#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_sm90.cuh"

namespace helix::cuda::mla_sm90 {

// Merges the partials of sequences spanning several CTAs; writes the empty sequences. Grid
// (B, H), kThreads threads, dynamic shared memory 8 bytes per CTA of a group; a programmatic
// dependent of the split kernel. Each thread keeps 8 partial loads in flight. Small batches
// (each sequence split 16-66 ways) take 512 threads: 4 groups of partials merged in shared
// memory, so a 32-way split costs one round of L2 latency instead of 8 (batch 1 x 16K, H200:
// 38 -> 32 us); larger batches take 128 threads (more CTAs per SM; 4 ways at batch 32).
template <int kThreads>
__global__ void __launch_bounds__(kThreads) mla_sm90_combine_kernel(const Args a) {
  mla_combine::combine_partials<kThreads, kL, kHeads, kUnit, 8, true, 1>(a);
}
constexpr int kCombineSmallBatch = 4;  // batches up to this take the 512-thread combine

#ifdef HELIX_SM90_ONE_TRIP
// Measurement variant: each of 128 threads merges its 4 columns over all partials itself, with an
// online max: a chunk's LSEs and rows are loaded together (one L2 round trip per 8 partials, not
// one for the LSEs and one for the rows), no shared memory or block reductions after the wait.
__global__ void __launch_bounds__(128) mla_sm90_combine1_kernel(const Args a) {
  using namespace mla_combine;
  __shared__ float s_red[4];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / kHeads, hl = h % kHeads;
  float before = 0.f, all = 0.f;
  for (int i = threadIdx.x; i < a.batch; i += 128) {
    const int t = (seq_tokens(a, i) + kUnit - 1) / kUnit;
    all += static_cast<float>(t);
    if (i < b) before += static_cast<float>(t);
  }
  const int tiles_before = static_cast<int>(block_reduce<128>(before, false, s_red));
  const int total = static_cast<int>(block_reduce<128>(all, false, s_red));
  const int mine = (seq_tokens(a, b) + kUnit - 1) / kUnit;
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  float* out_f = static_cast<float*>(a.out) + orow * kL;
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out) + orow * kL;
  const int col = 4 * threadIdx.x;
  if (mine == 0) {
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
    store4(out_f, out_h, a.out_bf16, col, make_float4(0.f, 0.f, 0.f, 0.f));
    if (threadIdx.x == 0) a.lse[orow] = -INFINITY;
    return;
  }
  const int ctas = active_ctas<1>(total, a.ctas_per_group);
  const int c_lo = cta_of(tiles_before, total, ctas);
  const int c_hi = cta_of(tiles_before + mine - 1, total, ctas);
  if (c_lo == c_hi) return;
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  const int n = c_hi - c_lo + 1;
  float m = -INFINITY, sum = 0.f;
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int i0 = 0; i0 < n; i0 += 8) {
    float l[8];
    float4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const int i = i0 + u, c = c_lo + i;
      l[u] = -INFINITY;
      v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (i < n && cta_begin(c, total, ctas) < cta_begin(c + 1, total, ctas)) {
        const int slot = (i == 0 && cta_begin(c, total, ctas) < tiles_before) ? 1 : 0;
        const int64_t row = partial_row(a, group, c, slot, kHeads) + hl;
        l[u] = a.part_lse[row];
        v[u] = *reinterpret_cast<const float4*>(a.part_out + row * kL + col);
      }
    }
    float mx = m;
#pragma unroll
    for (int u = 0; u < 8; ++u) mx = fmaxf(mx, l[u]);
    const float f = __expf(m - mx);  // m = -inf at the first chunk: 0 (o, sum are 0)
    scale4(o, f);
    sum *= f;
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const float w = __expf(l[u] - mx);  // 0 for -inf
      sum += w;
      fma4(o, w, v[u]);
    }
    m = mx;
  }
  scale4(o, 1.f / sum);
  store4(out_f, out_h, a.out_bf16, col, o);
  if (threadIdx.x == 0) a.lse[orow] = m + __logf(sum);
}
#endif

}  // namespace helix::cuda::mla_sm90
