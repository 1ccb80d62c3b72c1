#pragma once
// The split-KV absorbed-MLA decode on tensor cores, at fp32 accuracy: both GEMMs of a tile run on
// mma.sync m16n8k8 TF32 with the "3xTF32" error-compensated split (x = hi + lo, hi = tf32(x),
// lo = tf32(x - hi); a.b ~ a_lo.b_hi + a_hi.b_lo + a_hi.b_hi, accumulated in fp32), which keeps
// about fp32's precision (the dropped lo.lo term is ~2^-22 relative). Same CTA structure, tiles,
// online softmax and split plan as mla_decode_kernel.cuh (the fp32-FMA version, kept for
// comparison); included by one mla_decode_mma_*.cu file per instantiation.
//
// One CTA = (16 heads, KV chunk, sequence), 8 warps; tiles of 32 tokens, double-buffered with
// cp.async. Per tile:
//   1. S[16, 32] = Q[16, W] . KV[32, W]^T: the W/8 k-steps are split over the 8 warps (9 each at
//      W = 576); each warp keeps its Q fragments (hi and lo) in registers for the whole chunk and
//      does all 4 token n-tiles, then writes its partial S to shared memory;
//   2. online softmax (one warp per 2 heads, lane = token) sums the 8 partials and writes P
//      already split into hi and lo, plus the rescale factor per head;
//   3. O[16, L] = alpha * O + P[16, 32] . KV[32, L]: warp w owns L/8 consecutive columns
//      (64 at L = 512: 8 n-tiles of accumulators), 4 k-steps of 8 tokens.
// KV rows sit in shared memory with a stride = 8 (mod 32) words, which makes both fragment loads
// bank-conflict free: phase 1 reads B[k][n] = KV[n][k] as 64-bit pairs (the k order within a
// k-step is permuted to (2t, 2t + 1), the same for A and B), phase 3 reads B[k][n] = KV[k][n]
// with the standard fragment layout.
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_decode_args.h"
#include "ops/cuda/mla_decode_kernel.cuh"

namespace helix::cuda {

namespace mla_mma {

constexpr int kTile = 32;  // tokens per tile
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kHeads = 16;  // heads per CTA: one m16 tile

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void split_tf32(float x, uint32_t& hi, uint32_t& lo) {
  hi = to_tf32(x);
  lo = to_tf32(x - __uint_as_float(hi));
}
// Cheap split for the KV operand (split afresh in every tile, so its cost is per mma): hi is x
// truncated to tf32 (exact), lo = x - hi is exact in fp32 and is passed as is, the tensor core
// reading only its top 19 bits (a truncation: |error| < 2^-21 |x|, against 2^-22 with rounding).
__device__ __forceinline__ void split_tf32_fast(float x, uint32_t& hi, uint32_t& lo) {
  hi = __float_as_uint(x) & 0xffffe000u;
  lo = __float_as_uint(x - __uint_as_float(hi));
}
// c += a . b on one m16n8k8 TF32 tile.
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// c += a . b in 3xTF32, small terms first.
__device__ __forceinline__ void mma_3xtf32(float (&c)[4], const uint32_t (&a_hi)[4],
                                           const uint32_t (&a_lo)[4], const uint32_t (&b_hi)[2],
                                           const uint32_t (&b_lo)[2]) {
  mma_tf32(c, a_lo, b_hi);
  mma_tf32(c, a_hi, b_lo);
  mma_tf32(c, a_hi, b_hi);
}

template <int L, int R>
struct Config {
  static constexpr int W = L + R;
  static constexpr int W4 = W / 4;
  static constexpr int kStride = W + (8 - W % 32 + 32) % 32;    // = 8 (mod 32) words
  static constexpr int kKSteps = W / 8;                         // phase-1 k-steps in all
  static constexpr int kKSW = (kKSteps + kWarps - 1) / kWarps;  // per warp
  static constexpr int kNTiles = L / 8;                         // phase-3 n-tiles in all
  static constexpr int kNTW = (kNTiles + kWarps - 1) / kWarps;  // per warp
  static constexpr int kPartStride = kTile + 8;  // 64-bit fragment stores, conflict free
  static constexpr int kPStride = kTile + 4;     // 32-bit fragment loads, conflict free
  // shared memory, in floats
  static constexpr int kKvFloats = kTile * kStride;
  static constexpr int kSmemFloats =
      2 * kKvFloats + kWarps * kHeads * kPartStride + 2 * kHeads * kPStride + kHeads;
  static constexpr size_t kSmemBytes = sizeof(float) * kSmemFloats;

  static_assert(W % 8 == 0 && L % 8 == 0, "k-steps and n-tiles of 8");
  static_assert(kStride % 32 == 8 && kStride % 4 == 0, "row stride");
  static_assert(kHeads == 2 * kWarps, "softmax: two heads per warp");
};

template <int L, int R>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_split_mma_kernel(MlaDecodeSplitArgs a) {
  using C = Config<L, R>;
  constexpr int W = C::W;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* s_kv = smem;                                        // [2][kTile][kStride]
  float* s_part = s_kv + 2 * C::kKvFloats;                   // [kWarps][kHeads][kPartStride]
  float* s_phi = s_part + kWarps * kHeads * C::kPartStride;  // [kHeads][kPStride], tf32 bits
  float* s_plo = s_phi + kHeads * C::kPStride;               // idem
  float* s_alpha = s_plo + kHeads * C::kPStride;             // [kHeads]; at the end 1/d

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;  // fragment row group, thread in group
  const int h0 = blockIdx.x * kHeads;
  const int split = blockIdx.y;
  const int b = blockIdx.z;
  const int seq_len = a.seq_lens[b];
  const int chunk_begin = split * a.chunk_len;
  const int chunk_end = min(seq_len, chunk_begin + a.chunk_len);
  const int num_tiles = chunk_end > chunk_begin ? (chunk_end - chunk_begin + kTile - 1) / kTile : 0;
  const int32_t* table = a.block_table + static_cast<int64_t>(b) * a.max_blocks_per_seq;

  // Tile loads (see mla::KvTileLoader).
  mla::KvTileLoader<C> ld{a.kv_pool, table,     a.block_size, W,   chunk_begin,
                          chunk_end, num_tiles, warp,         lane};

  if (num_tiles > 0) {
    ld.fetch(0);
    ld.issue(s_kv, 0, ld.blk_next, ld.off_next);
  }
  mla::cp_async_commit();
  ld.fetch(1);

  // Q fragments of this warp's k-steps (k order (2t, 2t + 1) within a step), split once.
  // Rows past the head count are zero.
  uint32_t q_hi[C::kKSW][4], q_lo[C::kKSW][4];
  {
    const int64_t qrow = static_cast<int64_t>(b) * a.num_heads + h0;
    const bool r0 = h0 + g < a.num_heads, r1 = h0 + g + 8 < a.num_heads;
    const float* q0 = a.q + (qrow + g) * W;
    const float* q1 = a.q + (qrow + g + 8) * W;
#pragma unroll
    for (int i = 0; i < C::kKSW; ++i) {
      const int ks = warp * C::kKSW + i;
      float2 v0 = make_float2(0.f, 0.f), v1 = make_float2(0.f, 0.f);
      if (ks < C::kKSteps) {
        if (r0) v0 = *reinterpret_cast<const float2*>(q0 + 8 * ks + 2 * t);
        if (r1) v1 = *reinterpret_cast<const float2*>(q1 + 8 * ks + 2 * t);
      }
      split_tf32(v0.x, q_hi[i][0], q_lo[i][0]);  // (g, k 2t)
      split_tf32(v1.x, q_hi[i][1], q_lo[i][1]);  // (g + 8, k 2t)
      split_tf32(v0.y, q_hi[i][2], q_lo[i][2]);  // (g, k 2t + 1)
      split_tf32(v1.y, q_hi[i][3], q_lo[i][3]);  // (g + 8, k 2t + 1)
    }
  }

  // Online-softmax state of the heads this warp owns in step 2 (heads warp, warp + 8), log2.
  float m_run[2] = {-INFINITY, -INFINITY}, d_run[2] = {0.f, 0.f};
  // Phase-3 accumulators: n-tile warp * kNTW + j, C-fragment layout.
  float acc[C::kNTW][4];
#pragma unroll
  for (int j = 0; j < C::kNTW; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;

  const float scale_log2 = a.scale * 1.4426950408889634f;

  for (int it = 0; it < num_tiles; ++it) {
    const int buf = it & 1;
    if (it + 1 < num_tiles) {
      const int blk = ld.blk_next, off = ld.off_next;
      ld.fetch(it + 2);
      ld.issue(s_kv, buf ^ 1, blk, off);
    }
    mla::cp_async_commit();
    mla::cp_async_wait<1>();
    __syncthreads();
    const float* kv = s_kv + buf * C::kKvFloats;

    // 1. partial scores over this warp's k-steps, all 4 token n-tiles
    {
      // big (hi.hi) and small (lo.hi + hi.lo) terms in separate accumulators: two independent
      // mma chains per n-tile
      float s[kTile / 8][4], s_small[kTile / 8][4];
#pragma unroll
      for (int n = 0; n < kTile / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = s_small[n][e] = 0.f;
#pragma unroll
      for (int i = 0; i < C::kKSW; ++i) {
        const int ks = warp * C::kKSW + i;
        if (C::kKSteps % kWarps != 0 && ks >= C::kKSteps) break;
#pragma unroll
        for (int n = 0; n < kTile / 8; ++n) {
          // B[k][n] = KV[token 8n + g][feature 8ks + 2t (+1)]
          const float2 v =
              *reinterpret_cast<const float2*>(kv + (8 * n + g) * C::kStride + 8 * ks + 2 * t);
          uint32_t b_hi[2], b_lo[2];
          split_tf32_fast(v.x, b_hi[0], b_lo[0]);
          split_tf32_fast(v.y, b_hi[1], b_lo[1]);
          mma_tf32(s_small[n], q_lo[i], b_hi);
          mma_tf32(s_small[n], q_hi[i], b_lo);
          mma_tf32(s[n], q_hi[i], b_hi);
        }
      }
#pragma unroll
      for (int n = 0; n < kTile / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] += s_small[n][e];
      float* part = s_part + warp * kHeads * C::kPartStride;
#pragma unroll
      for (int n = 0; n < kTile / 8; ++n) {
        *reinterpret_cast<float2*>(part + g * C::kPartStride + 8 * n + 2 * t) =
            make_float2(s[n][0], s[n][1]);
        *reinterpret_cast<float2*>(part + (g + 8) * C::kPartStride + 8 * n + 2 * t) =
            make_float2(s[n][2], s[n][3]);
      }
    }
    __syncthreads();

    // 2. online softmax: warp owns heads warp and warp + 8, lane = token
    {
      const int pos = chunk_begin + it * kTile + lane;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int h = warp + kWarps * i;
        float x = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) x += s_part[(w * kHeads + h) * C::kPartStride + lane];
        x = pos < chunk_end ? x * scale_log2 : -INFINITY;
        const float m_new = fmaxf(m_run[i], mla::warp_max(x));
        const float p = m_new == -INFINITY ? 0.f : exp2f(x - m_new);
        const float alpha = m_run[i] == -INFINITY ? 0.f : exp2f(m_run[i] - m_new);
        d_run[i] = d_run[i] * alpha + mla::warp_sum(p);
        m_run[i] = m_new;
        uint32_t p_hi, p_lo;
        split_tf32(p, p_hi, p_lo);
        s_phi[h * C::kPStride + lane] = __uint_as_float(p_hi);
        s_plo[h * C::kPStride + lane] = __uint_as_float(p_lo);
        if (lane == 0) s_alpha[h] = alpha;
      }
    }
    __syncthreads();

    // 3. rescale and accumulate P . KV[:, :L]
    {
      const float al0 = s_alpha[g], al1 = s_alpha[g + 8];
#pragma unroll
      for (int j = 0; j < C::kNTW; ++j) {
        acc[j][0] *= al0;
        acc[j][1] *= al0;
        acc[j][2] *= al1;
        acc[j][3] *= al1;
      }
#pragma unroll
      for (int kk = 0; kk < kTile / 8; ++kk) {
        uint32_t p_hi[4], p_lo[4];
        const int c0 = 8 * kk + t;
        p_hi[0] = __float_as_uint(s_phi[g * C::kPStride + c0]);
        p_hi[1] = __float_as_uint(s_phi[(g + 8) * C::kPStride + c0]);
        p_hi[2] = __float_as_uint(s_phi[g * C::kPStride + c0 + 4]);
        p_hi[3] = __float_as_uint(s_phi[(g + 8) * C::kPStride + c0 + 4]);
        p_lo[0] = __float_as_uint(s_plo[g * C::kPStride + c0]);
        p_lo[1] = __float_as_uint(s_plo[(g + 8) * C::kPStride + c0]);
        p_lo[2] = __float_as_uint(s_plo[g * C::kPStride + c0 + 4]);
        p_lo[3] = __float_as_uint(s_plo[(g + 8) * C::kPStride + c0 + 4]);
        const float* row0 = kv + c0 * C::kStride;        // token 8kk + t
        const float* row1 = kv + (c0 + 4) * C::kStride;  // token 8kk + t + 4
#pragma unroll
        for (int j = 0; j < C::kNTW; ++j) {
          const int nt = warp * C::kNTW + j;
          if (C::kNTiles % kWarps != 0 && nt >= C::kNTiles) break;
          uint32_t b_hi[2], b_lo[2];
          split_tf32_fast(row0[8 * nt + g], b_hi[0], b_lo[0]);
          split_tf32_fast(row1[8 * nt + g], b_hi[1], b_lo[1]);
          mma_3xtf32(acc[j], p_hi, p_lo, b_hi, b_lo);
        }
      }
    }
    __syncthreads();  // buffer `buf`, s_part, s_phi/s_plo/s_alpha are rewritten next iteration
  }

  // Finalise: 1/d through shared memory, lse by the owning warp.
  const int64_t row0 = (static_cast<int64_t>(split) * a.batch + b) * a.num_heads;
  mla::store_softmax_totals(m_run, d_run, s_alpha, a.lse + row0 + h0, a.num_heads - h0, warp, lane);
  __syncthreads();
  const float inv0 = s_alpha[g], inv1 = s_alpha[g + 8];
  const bool w0 = h0 + g < a.num_heads, w1 = h0 + g + 8 < a.num_heads;
  float* o0 = a.out + (row0 + h0 + g) * L;
  float* o1 = a.out + (row0 + h0 + g + 8) * L;
#pragma unroll
  for (int j = 0; j < C::kNTW; ++j) {
    const int nt = warp * C::kNTW + j;
    if (C::kNTiles % kWarps != 0 && nt >= C::kNTiles) break;
    const int col = 8 * nt + 2 * t;
    if (w0) *reinterpret_cast<float2*>(o0 + col) = make_float2(acc[j][0] * inv0, acc[j][1] * inv0);
    if (w1) *reinterpret_cast<float2*>(o1 + col) = make_float2(acc[j][2] * inv1, acc[j][3] * inv1);
  }
}

}  // namespace mla_mma

template <int L, int R>
cudaError_t launch_mla_decode_split_mma(const MlaDecodeSplitArgs& a, cudaStream_t stream) {
  using C = mla_mma::Config<L, R>;
  auto kernel = mla_mma::mla_decode_split_mma_kernel<L, R>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(C::kSmemBytes));
  if (err != cudaSuccess) return err;
  const dim3 grid((a.num_heads + mla_mma::kHeads - 1) / mla_mma::kHeads, a.num_splits, a.batch);
  kernel<<<grid, mla_mma::kThreads, C::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

#define HELIX_INSTANTIATE_MLA_DECODE_MMA(L, R) \
  template cudaError_t launch_mla_decode_split_mma<L, R>(const MlaDecodeSplitArgs&, cudaStream_t);

}  // namespace helix::cuda
