#pragma once
// The memory-bound MLA decode's split kernel (mla_decode_mem.cu), bf16 KV: the combine fused into
// the split kernel (no second kernel). Used when the plan gives the launch arrival counters
// (Args::seq_counters, one per (head group, sequence), zero between launches) and the whole grid
// is resident (a cooperative launch).
//
// A sequence whose tiles span n CTAs (its "pieces") is merged by those CTAs themselves: each
// writes its partial as before, then arrives on the sequence's counter; at its end each piece with
// a share of the merge waits until all n have arrived and merges its share of the sequence's
// 16 heads x 512 columns from the n partials in L2 into out and lse. No CTA reads more than about
// one sequence's worth of partials, and a sequence is finished as soon as its own last piece ends
// (the combine kernel waited for the whole grid, then a second launch).
// Counters: each piece adds 1 on arrival, each piece with a share 1 more once it has seen all n
// arrive; the one that brings it to n + shares resets it to 0, so graph replays and repeated
// launches find it zeroed. Deadlock-free: a CTA arrives on all its pieces (the range's first
// sequence mid-kernel, its last at the end) before it waits on any, and every CTA is resident.
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
// wrote slot 0 (s is the first sequence of theirs). With n >= 3 the end pieces that also hold
// another sequence's piece (c_lo with slot 1, c_hi with real tiles past s) take no share of the
// merge (ex_lo, ex_hi): a CTA would otherwise merge two sequences one after the other.
struct Pieces {
  int c_lo = 0, n = 0, slot0 = 0;
  bool ex_lo = false, ex_hi = false;
  __device__ __forceinline__ int workers() const { return n - ex_lo - ex_hi; }
};
__device__ __forceinline__ Pieces pieces_of(const Args& a, int v_before, int v_total, int mine) {
  const int ctas = mla_combine::active_ctas<mla_combine::kMinTiles>(v_total, a.ctas_per_group);
  const int first = v_before + kSeqCost;  // the virtual index of s's first real tile
  Pieces p;
  p.c_lo = mla_combine::cta_of(first, v_total, ctas);
  const int c_hi = mla_combine::cta_of(first + mine - 1, v_total, ctas);
  p.n = c_hi - p.c_lo + 1;
  p.slot0 = mla_combine::cta_begin(p.c_lo, v_total, ctas) < v_before ? 1 : 0;
  if (p.n >= 3) {
    p.ex_lo = p.slot0 == 1;
    // c_hi's range reaches a real tile of a later sequence (past the next one's kSeqCost
    // virtual tiles)
    p.ex_hi = mla_combine::cta_begin(c_hi + 1, v_total, ctas) > first + mine + kSeqCost;
  }
  return p;
}

// Release this CTA's partial of the sequence behind `ctr` (after a barrier that ordered every
// writer's stores before this thread).
// (A red.release.gpu here measured ~7 us from the last arrival to the waiters seeing it, H200.)
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

// Loads per thread per round of the merge (more rounds when a share has more (unit, piece) pairs:
// only with n = 3 and one share). The lse of all pieces load in the first round: n <= kFuseMaxCtas.
constexpr int kMergeLoads = 12;
static_assert(kHeadGroup * kFuseMaxCtas <= kThreads * kMergeLoads, "all lse in one round");

// CTA `cta`'s share of sequence s's merge (all kThreads threads; starts with a barrier, so the
// caller's shared-memory use may end right before). scratch: free shared memory for 16 n floats
// and kThreads x kMergeLoads float4. A share is a range of units (4 consecutive columns of one
// head); every partial value of it and every partial lse of the sequence are loaded at once (one
// L2 round trip), weighted in shared memory, then summed per unit in a fixed order.
__device__ __forceinline__ void fuse_merge(const Args& a, int s, int group, int cta, Pieces pc,
                                           unsigned* ctr, float* scratch, int tid) {
  const int n = pc.n, i = cta - pc.c_lo;
  const int nw = pc.workers(), wi = i - pc.ex_lo;
  if ((pc.ex_lo && i == 0) || (pc.ex_hi && i == n - 1)) return;  // no share: no wait
  if (tid == 0) {
    unsigned v;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(ctr) : "memory");
      if (v >= static_cast<unsigned>(n)) break;
      __nanosleep(20);
    }
    // seen all n: depart; the last worker to depart resets the counter for the next launch
    if (atomicAdd(ctr, 1u) == static_cast<unsigned>(n + nw - 1)) atomicExch(ctr, 0u);
  }
  __syncthreads();
  const int h0 = group * kHeadGroup, nh = min(kHeadGroup, a.num_heads - h0);
  constexpr int kChunks = L / 4;
  const int units = nh * kChunks;
  const int u_lo = static_cast<int>(static_cast<int64_t>(wi) * units / nw);
  const int cnt = static_cast<int>(static_cast<int64_t>(wi + 1) * units / nw) - u_lo;
  float* s_w = scratch;                     // [nh][n]: lse, then weights
  float* s_lse = scratch + kHeadGroup * n;  // [nh]
  float4* s_v = reinterpret_cast<float4*>(s_lse + kHeadGroup);  // [k][cnt] weighted values
  auto prow = [&](int k) {  // first partial row of piece k
    return mla_combine::partial_row(a, group, pc.c_lo + k, k == 0 ? pc.slot0 : 0, kHeadGroup);
  };
  const int pairs = cnt * n;  // pair p: unit u_lo + p % cnt of piece p / cnt
  for (int p0 = 0; p0 < pairs; p0 += kThreads * kMergeLoads) {
    float4 v[kMergeLoads];
    float l[kMergeLoads];
#pragma unroll
    for (int r = 0; r < kMergeLoads; ++r) {
      const int p = p0 + tid + r * kThreads;
      if (p < pairs) {
        const int k = p / cnt, u = u_lo + p - k * cnt, hl = u / kChunks;
        v[r] = __ldcg(reinterpret_cast<const float4*>(a.part_out + (prow(k) + hl) * L +
                                                      4 * (u - hl * kChunks)));
      }
      // the lse of every (head, piece), in the first round
      const int x = tid + r * kThreads;
      if (p0 == 0 && x < nh * n) l[r] = __ldcg(a.part_lse + prow(x / nh) + x % nh);
    }
    if (p0 == 0) {
#pragma unroll
      for (int r = 0; r < kMergeLoads; ++r) {
        const int x = tid + r * kThreads;
        if (x < nh * n) s_w[(x % nh) * n + x / nh] = l[r];
      }
      __syncthreads();
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
      __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kMergeLoads; ++r) {
      const int p = p0 + tid + r * kThreads;
      if (p < pairs) {
        const int k = p / cnt, u = u_lo + p - k * cnt;
        mla_combine::scale4(v[r], s_w[(u / kChunks) * n + k]);
        s_v[p] = v[r];
      }
    }
  }
  __syncthreads();
  float* out_f = static_cast<float*>(a.out);
  __nv_bfloat16* out_h = static_cast<__nv_bfloat16*>(a.out);
  for (int c = tid; c < cnt; c += kThreads) {
    float4 o = s_v[c];
    for (int k = 1; k < n; ++k) mla_combine::fma4(o, 1.f, s_v[k * cnt + c]);
    const int u = u_lo + c, hl = u / kChunks, cc = u - hl * kChunks;
    const int64_t orow = static_cast<int64_t>(s) * a.num_heads + h0 + hl;
    mla_combine::store4(out_f + orow * L, out_h + orow * L, a.out_bf16, 4 * cc, o);
    if (cc == 0) a.lse[orow] = s_lse[hl];
  }
}

}  // namespace helix::cuda::mla_mem::split
