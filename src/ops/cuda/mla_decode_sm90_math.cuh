#pragma once
// The sm90 MLA decode kernel's per-tile steps (mla_decode_sm90.cuh), shared by its two consumer
// warpgroups: the tile's valid rows and the zeroing of the rest, the scores' wgmma chain over the
// Q and K chunks, their scale and mask, the online softmax's exponentials packed as P, the output
// rescale and the P.V wgmmas. Included mid-way by mla_decode_sm90.cuh: it uses that file's layout
// constants and mla_decode_sm90_fp8.cuh's FP8 ones.
#include <cuda_bf16.h>

#include <cstdint>

namespace helix::cuda::mla_sm90 {

// Tokens of the tile at tok0 (kTile, fewer at a sequence's tail).
__device__ __forceinline__ int tile_valid(int len, int tok0) {
  return ptx::tile_valid<kTile>(len, tok0);
}

// Zeroes rows [valid, 64) of chunks [c0, c0 + 4) of a stage (one warpgroup), then makes the
// zeros visible to this warpgroup's MMAs.
__device__ __forceinline__ void zero_tail(uint8_t* stage, int c0, int valid, int tw, int wg) {
  const int n = (kTile - valid) * 8 * 4;  // 16-byte pieces
  for (int i = tw; i < n; i += 128) {
    const int c = c0 + i / ((kTile - valid) * 8), rem = i % ((kTile - valid) * 8);
    const int row = valid + rem / 8;
    *reinterpret_cast<uint4*>(stage + c * kChunkBytes + row * 128 + (rem % 8) * 16) =
        make_uint4(0, 0, 0, 0);
  }
  fence_async_smem();
  bar_sync(kBarWg + wg, 128);
}

// O[:, half] *= f (per row: elements 0, 1 row r0, 2, 3 row r1). Skipped when the warp's factors
// are all 1 (the max did not move).
__device__ __forceinline__ void rescale(float (&o)[128], float f0, float f1) {
  if (!__any_sync(0xffffffffu, f0 != 1.f || f1 != 1.f)) return;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    o[4 * j] *= f0;
    o[4 * j + 1] *= f0;
    o[4 * j + 2] *= f1;
    o[4 * j + 3] *= f1;
  }
}

// Scores of one tile into s. bf16: Q rope (registers) . K rope first (that chunk is refilled and
// read first; scale_d 0 starts the sum), committed as its own group, then after_rope(), then Q
// latent (smem) . K latent; each chunk's MMAs wait for that chunk's TMA. FP8: the latent chunks
// first, in the order the converters widen them (highest first), then (all MMAs done) the latent
// sums times the column's token scale (sc: the tile's [64] scales in shared memory; they landed
// before the first latent chunk was widened), then the rope part (not scaled) on top: one
// accumulator, so the FP8 consumer needs no more registers than the bf16 one (with a separate
// rope accumulator ptxas serialised every wgmma for want of registers).
template <bool kFp8, class F, class W = void (*)(int)>
__device__ __forceinline__ void score_mmas(
    float (&s)[32], uint32_t q_base, uint32_t k_base, uint32_t full_bar, uint32_t parity,
    const uint32_t (&qpe)[4][4], const float* sc, int t, F&& after_rope, W&& widen = [](int) {}) {
  auto rope = [&](bool acc) {
    mbar_wait(full_bar + 8 * (kChunks - 1), parity);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n64k16_rs(s, qpe[kk],
                         desc_sw128(k_base + (kChunks - 1) * kChunkBytes + 32 * kk, 16, 1024),
                         acc || kk != 0);
    wg_commit();
  };
  wg_fence();
  if constexpr (!kFp8) {
    rope(false);
    after_rope();
  }
#pragma unroll
  for (int cc = 0; cc < kL / 64; ++cc) {
    const int c = kFp8 ? kL / 64 - 1 - cc : cc;
    if constexpr (kFp8)
      if (c & 1) widen(c >> 1);  // FP8: this warpgroup's part of raw chunk c / 2
    mbar_wait(full_bar + 8 * c, parity);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n64k16_ss(s, desc_sw128(q_base + c * kChunkBytes + 32 * kk, 16, 1024),
                         desc_sw128(k_base + c * kChunkBytes + 32 * kk, 16, 1024),
                         kFp8 && cc == 0 && kk == 0 ? 0 : 1);
  }
  wg_commit();
  if constexpr (kFp8) {
    after_rope();
    wg_wait<0>();
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float2 c = *reinterpret_cast<const float2*>(sc + 8 * j + 2 * t);
      s[4 * j] *= c.x;
      s[4 * j + 1] *= c.y;
      s[4 * j + 2] *= c.x;
      s[4 * j + 3] *= c.y;
    }
    wg_fence();
    rope(true);
  }
}

// Masked, scaled scores (log2 domain) and their row maxima over the quad.
__device__ __forceinline__ void scale_mask(float (&s)[32], int valid, int t, float scale_log2,
                                           float& mx0, float& mx1) {
  mx0 = -INFINITY;
  mx1 = -INFINITY;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = 8 * j + 2 * t + (e & 1);
      const float v = tail_score(col, valid, s[4 * j + e], scale_log2);
      s[4 * j + e] = v;
      if (e < 2)
        mx0 = fmaxf(mx0, v);
      else
        mx1 = fmaxf(mx1, v);
    }
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
}

// P = 2^(s - m) into bf16 A fragments (registers) and the swizzled smem tile for the other
// warpgroup; returns this thread's part of the row sums. FP8: the fragments hold P times the
// column's token scale (the sums do not).
template <bool kFp8>
__device__ __forceinline__ void exp_pack(float (&s)[32], float m0, float m1, uint32_t (&p)[4][4],
                                         uint8_t* sp, int r0, int t, const float* sc, float& sum0,
                                         float& sum1) {
  sum0 = 0.f;
  sum1 = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    s[4 * j] = exp2_fast(s[4 * j] - m0);
    s[4 * j + 1] = exp2_fast(s[4 * j + 1] - m0);
    s[4 * j + 2] = exp2_fast(s[4 * j + 2] - m1);
    s[4 * j + 3] = exp2_fast(s[4 * j + 3] - m1);
    sum0 += s[4 * j] + s[4 * j + 1];
    sum1 += s[4 * j + 2] + s[4 * j + 3];
    float c0 = 1.f, c1 = 1.f;
    if constexpr (kFp8) {
      const float2 c = *reinterpret_cast<const float2*>(sc + 8 * j + 2 * t);
      c0 = c.x;
      c1 = c.y;
    }
    const uint32_t lo = pack_bf16(s[4 * j] * c0, s[4 * j + 1] * c1);
    const uint32_t hi = pack_bf16(s[4 * j + 2] * c0, s[4 * j + 3] * c1);
    p[j / 2][(j & 1) * 2] = lo;
    p[j / 2][(j & 1) * 2 + 1] = hi;
    // K-major 128B swizzle; r0 & 7 == (r0 + 8) & 7.
    const int sw = sw128(r0, j) + 4 * t;
    *reinterpret_cast<uint32_t*>(sp + r0 * 128 + sw) = lo;
    *reinterpret_cast<uint32_t*>(sp + (r0 + 8) * 128 + sw) = hi;
  }
}

__device__ __forceinline__ void pv_rs(float (&o)[128], const uint32_t (&p)[4][4], uint32_t v_base) {
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    wgmma_m64n256k16_rs_tb(o, p[kk], desc_sw128(v_base + kk * 2048, kChunkBytes, 1024), 1);
  wg_commit();
}
__device__ __forceinline__ void pv_ss(float (&o)[128], uint32_t p_base, uint32_t v_base) {
  wg_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    wgmma_m64n256k16_ss_tb(o, desc_sw128(p_base + 32 * kk, 16, 1024),
                           desc_sw128(v_base + kk * 2048, kChunkBytes, 1024), 1);
  wg_commit();
}

}  // namespace helix::cuda::mla_sm90
