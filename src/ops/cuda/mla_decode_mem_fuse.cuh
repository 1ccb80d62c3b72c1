#pragma once
// The memory-bound MLA decode's split kernel (mla_decode_mem.cu), bf16 KV: the combine fused into
// the split kernel (no second kernel). Used when the plan gives the launch arrival counters
// (Args::seq_counters, one per (head group, sequence), zero between launches) and the whole grid
// is resident (a cooperative launch).
//
// A sequence whose tiles span n CTAs (its "pieces") is merged by those n CTAs themselves: each
// writes its partial as before, then arrives on the sequence's counter; at its end each waits
// until all n have arrived and merges 1/n of the sequence's (16 heads x 512 columns) from the n
// partials in L2 into out and lse. The merge is spread over the pieces, so no CTA reads more than
// one sequence's worth of partials (16 x 512 floats), and a sequence is finished as soon as its
// own last piece ends (the combine kernel waited for the whole grid and a second launch).
// Counters: each piece adds 1 on arrival and 1 once it has seen all n arrive; the piece that
// brings it to 2n resets it to 0, so graph replays and repeated launches find it zeroed.
// Deadlock-free: a CTA arrives on all its pieces (the range's first sequence mid-kernel, its last
// at the end) before it waits on any, and every CTA is resident.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_mem_common.cuh"
#include "ops/cuda/mla_decode_mem_layout.cuh"

namespace helix::cuda::mla_mem::split {

using namespace detail;

// The CTAs of the virtual partition (cta_tile_range with kSeqCost) that hold sequence s's `mine`
// real tiles, s's virtual tiles starting at v_before of v_total: c_lo .. c_lo + n - 1; slot0 is
// the partial slot CTA c_lo wrote (1 when s is not the first sequence of its range), the others
// wrote slot 0 (s is the first sequence of theirs).
struct Pieces {
  int c_lo = 0, n = 0, slot0 = 0;
};
__device__ __forceinline__ Pieces pieces_of(const Args& a, int v_before, int v_total, int mine) {
  const int ctas = mla_combine::active_ctas<mla_combine::kMinTiles>(v_total, a.ctas_per_group);
  const int first = v_before + kSeqCost;  // the virtual index of s's first real tile
  Pieces p;
  p.c_lo = mla_combine::cta_of(first, v_total, ctas);
  p.n = mla_combine::cta_of(first + mine - 1, v_total, ctas) - p.c_lo + 1;
  p.slot0 = mla_combine::cta_begin(p.c_lo, v_total, ctas) < v_before ? 1 : 0;
  return p;
}

// Release this CTA's partial of the sequence behind `ctr` (after a barrier that ordered every
// writer's stores before this thread).
__device__ __forceinline__ void fuse_arrive(unsigned* ctr) {
  __threadfence();
  atomicAdd(ctr, 1u);
}

// Out 0 and lse -inf for the empty sequences b = cta, cta + grid, ... of this head group (all
// threads of the CTA).
__device__ __forceinline__ void fuse_write_empty(const Args& a, const int* s_len, int group,
                                                 int cta, int tid) {
  const int h0 = group * kHeadGroup, nh = min(kHeadGroup, a.num_heads - h0);
  for (int b = cta; b < a.batch; b += gridDim.x) {
    if (s_len[b] != 0) continue;
    const int64_t row0 = static_cast<int64_t>(b) * a.num_heads + h0;
    for (int x = tid; x < nh * (L / 4); x += kThreads) {
      const int64_t off = (row0 + x / (L / 4)) * L + 4 * (x % (L / 4));
      if (a.out_bf16)
        *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(a.out) + off) = make_uint2(0u, 0u);
      else
        *reinterpret_cast<float4*>(static_cast<float*>(a.out) + off) =
            make_float4(0.f, 0.f, 0.f, 0.f);
    }
    if (tid < nh) a.lse[row0 + tid] = -INFINITY;
  }
}

// CTA `cta`'s share of sequence s's merge (all kThreads threads; a barrier first, so the caller's
// shared-memory use may end right before). scratch: (16 n + 16) floats of free shared memory.
__device__ __forceinline__ void fuse_merge(const Args& a, int s, int group, int cta, Pieces pc,
                                           unsigned* ctr, float* scratch, int tid) {
  const int n = pc.n;
  if (tid == 0) {
    unsigned v;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(ctr) : "memory");
      if (v >= static_cast<unsigned>(n)) break;
      __nanosleep(32);
    }
    // seen all n: depart; the last to depart resets the counter for the next launch
    if (atomicAdd(ctr, 1u) == static_cast<unsigned>(2 * n - 1)) atomicExch(ctr, 0u);
  }
  __syncthreads();
  const int h0 = group * kHeadGroup, nh = min(kHeadGroup, a.num_heads - h0);
  float* s_w = scratch;               // [nh][n]: lse, then the normalised weights
  float* s_lse = scratch + nh * n;    // [nh]
  auto prow = [&](int k) {            // first partial row of piece k
    return mla_combine::partial_row(a, group, pc.c_lo + k, k == 0 ? pc.slot0 : 0, kHeadGroup);
  };
  for (int x = tid; x < nh * n; x += kThreads) {
    const int k = x / nh, hl = x - k * nh;
    s_w[hl * n + k] = __ldcg(a.part_lse + prow(k) + hl);
  }
  __syncthreads();
  {
    const int warp = tid >> 5, lane = tid & 31;
    for (int hl = warp; hl < nh; hl += kThreads / 32) {
      float mx = -INFINITY;
      for (int k = lane; k < n; k += 32) mx = fmaxf(mx, s_w[hl * n + k]);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      float sum = 0.f;
      for (int k = lane; k < n; k += 32) sum += __expf(s_w[hl * n + k] - mx);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      const float inv = 1.f / sum;
      __syncwarp();
      for (int k = lane; k < n; k += 32) s_w[hl * n + k] = __expf(s_w[hl * n + k] - mx) * inv;
      if (lane == 0) s_lse[hl] = mx + __logf(sum);
    }
  }
  __syncthreads();
  // This piece's units (one head's 4 consecutive columns each) of the nh x L / 4; G threads per
  // unit (a power of two up to 32, as many as the units leave), each summing every G-th partial.
  constexpr int kChunks = L / 4;
  const int units = nh * kChunks;
  const int i = cta - pc.c_lo;
  const int u_lo = static_cast<int>(static_cast<int64_t>(i) * units / n);
  const int u_hi = static_cast<int>(static_cast<int64_t>(i + 1) * units / n);
  const int cnt = u_hi - u_lo;
  int G = 1;
  while (G < 32 && 2 * G * cnt <= kThreads && G < n) G *= 2;
  const int r = tid & (G - 1), per = kThreads / G;
  float* out_f = static_cast<float*>(a.out);
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out);
  for (int base = 0; base < cnt; base += per) {  // the same trip count in every thread
    const int u = u_lo + base + tid / G;
    const bool valid = base + tid / G < cnt;
    const int hl = valid ? u / kChunks : 0, cc = u - hl * kChunks;
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    if (valid) {
#pragma unroll 4
      for (int k = r; k < n; k += G) {
        const float4 v = __ldcg(reinterpret_cast<const float4*>(a.part_out +
                                                                (prow(k) + hl) * L + 4 * cc));
        mla_combine::fma4(o, s_w[hl * n + k], v);
      }
    }
    for (int m = 1; m < G; m <<= 1) {
      o.x += __shfl_xor_sync(0xffffffffu, o.x, m);
      o.y += __shfl_xor_sync(0xffffffffu, o.y, m);
      o.z += __shfl_xor_sync(0xffffffffu, o.z, m);
      o.w += __shfl_xor_sync(0xffffffffu, o.w, m);
    }
    if (valid && r == 0) {
      const int64_t orow = static_cast<int64_t>(s) * a.num_heads + h0 + hl;
      mla_combine::store4(out_f + orow * L, out_h + orow * L, a.out_bf16, 4 * cc, o);
      if (cc == 0) a.lse[orow] = s_lse[hl];
    }
  }
}

}  // namespace helix::cuda::mla_mem::split
