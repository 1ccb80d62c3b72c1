#pragma once
// The combine kernel of the sm90 MLA decode (mla_decode_sm90.cuh): merges the split partials.
#include "ops/cuda/mla_decode_sm90.cuh"

namespace helix::cuda::mla_sm90 {

// Merges the partials of sequences spanning several CTAs; writes the empty sequences. Grid
// (B, H), 128 x S threads, dynamic shared memory 8 bytes per CTA of a group. The threads form S
// slices of 128 (4 columns each); slice k sums partials k, k + S, ... with 8 loads in flight.
// Small batches (a sequence split 16-66 ways) take S = 4: one or two rounds of L2 latency
// instead of up to 8; larger ones S = 1 (more CTAs per SM).
constexpr int kCombineSlicesSmallBatch = 4;
constexpr int kCombineSmallBatch = 4;  // batches up to this take the 4-slice combine

template <int kThreadsT>
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
  for (int w = 1; w < kThreadsT / 32; ++w) v = is_max ? fmaxf(v, s_red[w]) : v + s_red[w];
  return v;
}

template <int kCombineSlices>
__global__ void __launch_bounds__(128 * kCombineSlices) mla_sm90_combine_kernel(const Args a) {
  constexpr int kCombineThreads = 128 * kCombineSlices;
  extern __shared__ float s_dyn[];
  __shared__ float s_red[kCombineThreads / 32];
  const int b = blockIdx.x, h = blockIdx.y;
  const int group = h / kHeads, hl = h % kHeads;
  float before = 0.f, all = 0.f;  // tile counts (exact in fp32 below 2^24)
  for (int x = threadIdx.x; x < a.batch; x += kCombineThreads) {
    const float tiles = static_cast<float>((seq_tokens(a, x) + kTile - 1) / kTile);
    all += tiles;
    if (x < b) before += tiles;
  }
  const int tiles_before = static_cast<int>(block_reduce<kCombineThreads>(before, false, s_red));
  const int total = static_cast<int>(block_reduce<kCombineThreads>(all, false, s_red));
  const int mine = (seq_tokens(a, b) + kTile - 1) / kTile;
  // Launched with programmatic dependent launch: the split kernel may still run until here
  // (seq_lens was complete before it let this grid start).
  grid_dep_wait();
  const int64_t orow = static_cast<int64_t>(b) * a.num_heads + h;
  float* out_f = static_cast<float*>(a.out) + orow * kL;
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out) + orow * kL;
  if (mine == 0) {
    for (int c = threadIdx.x; c < kL; c += kCombineThreads) {
      if (a.out_bf16)
        out_h[c] = __float2bfloat16(0.f);
      else
        out_f[c] = 0.f;
    }
    if (threadIdx.x == 0) a.lse[orow] = -INFINITY;
    return;
  }
  const int ctas = active_ctas(total, a.ctas_per_group);
  const int c_lo = cta_of(tiles_before, total, ctas);
  const int c_hi = cta_of(tiles_before + mine - 1, total, ctas);
  if (c_lo == c_hi) return;  // one CTA held it all and wrote the final result
  const int n = c_hi - c_lo + 1;
  float* s_w = s_dyn;                                             // [n] weights
  int* s_row = reinterpret_cast<int*>(s_dyn + a.ctas_per_group);  // [n] partial rows
  float mx = -INFINITY;
  for (int x = threadIdx.x; x < n; x += kCombineThreads) {
    const int c = c_lo + x;
    float l = -INFINITY;
    int row = 0;
    if (cta_begin(c, total, ctas) < cta_begin(c + 1, total, ctas)) {  // a CTA with tiles
      const int slot = (x == 0 && cta_begin(c, total, ctas) != tiles_before) ? 1 : 0;
      row = ((group * a.ctas_per_group + c) * 2 + slot) * kHeads + hl;
      l = a.part_lse[row];
    }
    s_w[x] = l;
    s_row[x] = row;
    mx = fmaxf(mx, l);
  }
  mx = block_reduce<kCombineThreads>(mx, true, s_red);
  float sum = 0.f;
  for (int x = threadIdx.x; x < n; x += kCombineThreads) {
    const float w = __expf(s_w[x] - mx);
    s_w[x] = w;
    sum += w;
  }
  sum = block_reduce<kCombineThreads>(sum, false, s_red);
  const float inv = 1.f / sum;
  static_assert(kL == 4 * 128, "one float4 column group per thread of a slice");
  __shared__ float4 s_acc[kCombineSlices > 1 ? kCombineSlices - 1 : 1][kL / 4];
  const int slice = threadIdx.x / 128, col = 4 * (threadIdx.x % 128);
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
  for (int x = slice; x < n; x += kCombineSlices) {
    const float w = s_w[x];  // 0 for a CTA without tiles: its row is never read into the sum
    const float4 v =
        *reinterpret_cast<const float4*>(a.part_out + static_cast<int64_t>(s_row[x]) * kL + col);
    acc.x += w != 0.f ? w * v.x : 0.f;
    acc.y += w != 0.f ? w * v.y : 0.f;
    acc.z += w != 0.f ? w * v.z : 0.f;
    acc.w += w != 0.f ? w * v.w : 0.f;
  }
  if (slice > 0) s_acc[slice - 1][col / 4] = acc;
  __syncthreads();
  if (slice == 0) {
#pragma unroll
    for (int k = 0; k < kCombineSlices - 1; ++k) {
      const float4 u = s_acc[k][col / 4];
      acc.x += u.x;
      acc.y += u.y;
      acc.z += u.z;
      acc.w += u.w;
    }
    acc.x *= inv;
    acc.y *= inv;
    acc.z *= inv;
    acc.w *= inv;
    if (a.out_bf16) {
      *reinterpret_cast<__nv_bfloat162*>(out_h + col) = __floats2bfloat162_rn(acc.x, acc.y);
      *reinterpret_cast<__nv_bfloat162*>(out_h + col + 2) = __floats2bfloat162_rn(acc.z, acc.w);
    } else {
      *reinterpret_cast<float4*>(out_f + col) = acc;
    }
  }
  if (threadIdx.x == 0) a.lse[orow] = mx + __logf(sum);
}

}  // namespace helix::cuda::mla_sm90
