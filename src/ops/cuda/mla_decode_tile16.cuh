#pragma once
// The tile step of the one-launch small-batch MLA kernels (mla_decode_lat.cu: a grid barrier,
// mla_decode_cluster.cu: a cluster's distributed shared memory). Both run 16 heads a CTA in 8 warps
// over 32-token bf16 tiles held in padded shared-memory rows; they differ in how the tiles are
// split and how the partials merge, and share what is done with a tile that has landed.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda::mla_tile16 {

constexpr int L = 512, R = 64, W = L + R;
constexpr int kTile = 32;
constexpr int kThreads = 256;
constexpr int kRowBytes = 2 * W;                  // 1152: a pool row
constexpr int kRowStride = kRowBytes + 16;        // 73 x 16 B: conflict-free ldmatrix rows
constexpr int kStageBytes = kTile * kRowStride;   // 37376
constexpr int kScStride = 40;                     // floats per score row in shared memory
constexpr int kScBytes = 2 * 16 * kScStride * 4;  // scores [2 k-halves][16][kScStride]
constexpr int kQChunks = 16 * kRowBytes / 16;     // 1152 16-byte pieces of the query
constexpr int kQPer = (kQChunks + kThreads - 1) / kThreads;  // 5 per thread
constexpr int kKHalf = W / 16 / 2;                           // 18 k-steps per warp
constexpr int kCols = 64;                                    // output columns per warp

__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  ptx::mma_bf16_m16n8k16(c, a[0], a[1], a[2], a[3], b0, b1);
}

// The query's A fragments for warp (k-half kh)'s 18 k-steps, from its 16 rows at q_smem.
__device__ __forceinline__ void load_q_frags(uint32_t q_smem, int kh, int lane,
                                             uint32_t (&qf)[kKHalf][4]) {
  const uint32_t qaddr = q_smem + ((lane & 7) + 8 * ((lane >> 3) & 1)) * kRowStride +
                         (16 * kh * kKHalf + 8 * (lane >> 4)) * 2;
#pragma unroll
  for (int i = 0; i < kKHalf; ++i) ptx::ldsm_x4(qf[i], qaddr + 32 * i);
}

// A warp's online-softmax state, empty: O[16, its 64 columns] as m16n8 fragments (rows g and
// g + 8), the rows' running max (log2 domain) and sum.
__device__ __forceinline__ void zero_state(float (&acc)[8][4], float (&m_run)[2],
                                           float (&d_run)[2]) {
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.f;
  m_run[0] = m_run[1] = -INFINITY;
  d_run[0] = d_run[1] = 0.f;
}

// One landed tile (tokens tok0.. of a len-token sequence, at shared address `stage`): scores
// through s_sc (a block barrier in between), softmax, O += P V. Every thread of the CTA calls it.
__device__ __forceinline__ void tile_step(uint32_t stage, const uint32_t (&qf)[kKHalf][4],
                                          float* s_sc, int tok0, int len, float scale_log2,
                                          float (&acc)[8][4], float (&m_run)[2], float (&d_run)[2],
                                          int warp, int lane) {
  using namespace ptx;
  const int g = lane >> 2, t = lane & 3;
  const int nt = warp & 3, kh = warp >> 2;  // score n-tile (8 tokens), k-half
  // 1. scores of tokens 8 nt.. over k-steps 18 kh.. (two chains)
  {
    float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};
    const uint32_t kaddr =
        stage + (8 * nt + (lane & 7)) * kRowStride + (16 * kh * kKHalf + 8 * (lane >> 3)) * 2;
#pragma unroll
    for (int kp = 0; kp < kKHalf / 2; ++kp) {
      uint32_t kb[4];
      ldsm_x4(kb, kaddr + kp * 64);
      mma(s0, qf[2 * kp], kb[0], kb[1]);
      mma(s1, qf[2 * kp + 1], kb[2], kb[3]);
    }
    float* dst = s_sc + kh * 16 * kScStride + 8 * nt + 2 * t;
    *reinterpret_cast<float2*>(dst + g * kScStride) = make_float2(s0[0] + s1[0], s0[1] + s1[1]);
    *reinterpret_cast<float2*>(dst + (g + 8) * kScStride) =
        make_float2(s0[2] + s1[2], s0[3] + s1[3]);
  }
  __syncthreads();  // both k-halves of all 32 tokens written
  // 2. online softmax of rows g, g + 8 (every warp the same), P as A fragments of 2 k-steps
  float sv[2][2][2][2];  // [k-step][row][col half][pair element]
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int ks = 0; ks < 2; ++ks)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int col = 16 * ks + 8 * hh + 2 * t;
        const int row = g + 8 * rr;
        const float2 x = *reinterpret_cast<const float2*>(s_sc + row * kScStride + col);
        const float2 y = *reinterpret_cast<const float2*>(s_sc + (16 + row) * kScStride + col);
        sv[ks][rr][hh][0] = tail_score(tok0 + col, len, x.x + y.x, scale_log2);
        sv[ks][rr][hh][1] = tail_score(tok0 + col + 1, len, x.y + y.y, scale_log2);
        mx[rr] = fmaxf(mx[rr], fmaxf(sv[ks][rr][hh][0], sv[ks][rr][hh][1]));
      }
  float alpha[2], m_use[2], rs[2] = {0.f, 0.f};
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 1));
    mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 2));
    const float m_new = fmaxf(m_run[rr], mx[rr]);
    m_use[rr] = m_new == -INFINITY ? 0.f : m_new;
    alpha[rr] = exp2_fast(m_run[rr] - m_use[rr]);
    m_run[rr] = m_new;
  }
  uint32_t pa[2][4];
#pragma unroll
  for (int ks = 0; ks < 2; ++ks) {
    float p[2][2][2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          p[rr][hh][e] = exp2_fast(sv[ks][rr][hh][e] - m_use[rr]);
          rs[rr] += p[rr][hh][e];
        }
    pa[ks][0] = pack_bf16(p[0][0][0], p[0][0][1]);
    pa[ks][1] = pack_bf16(p[1][0][0], p[1][0][1]);
    pa[ks][2] = pack_bf16(p[0][1][0], p[0][1][1]);
    pa[ks][3] = pack_bf16(p[1][1][0], p[1][1][1]);
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    rs[rr] += __shfl_xor_sync(0xffffffffu, rs[rr], 1);
    rs[rr] += __shfl_xor_sync(0xffffffffu, rs[rr], 2);
    d_run[rr] = d_run[rr] * alpha[rr] + rs[rr];
  }
  // Rescale only when a row's max moved (rarely once it settles).
  if (!__all_sync(0xffffffffu, alpha[0] == 1.f && alpha[1] == 1.f))
#pragma unroll
    for (int n = 0; n < 8; ++n) {
      acc[n][0] *= alpha[0];
      acc[n][1] *= alpha[0];
      acc[n][2] *= alpha[1];
      acc[n][3] *= alpha[1];
    }
  // 3. O[16, columns 64 warp..] += P V
  const uint32_t vaddr = stage + ((lane & 7) + 8 * ((lane >> 3) & 1)) * kRowStride +
                         (kCols * warp + 8 * (lane >> 4)) * 2;
#pragma unroll
  for (int ks = 0; ks < 2; ++ks)
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t vb[4];
      ldsm_x4_t(vb, vaddr + 16 * ks * kRowStride + np * 32);
      mma(acc[2 * np], pa[ks], vb[0], vb[1]);
      mma(acc[2 * np + 1], pa[ks], vb[2], vb[3]);
    }
}

}  // namespace helix::cuda::mla_tile16
