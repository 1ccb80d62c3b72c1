#pragma once
// The FP8 tile loop of the memory-bound MLA kernel (mla_decode_mem.cu, kFp8): one sequence piece's
// tiles j .. j + cnt - 1 (CTA-relative), accumulated into the calling warp's online-softmax state.
//
// The two column-half warps of worker w (warps 2 w, 2 w + 1) take whole 32-token tiles j + w,
// j + w + 4, ...: 4 score n-tiles and P.V over two k-steps per warp, so each warp has twice the
// independent MMA chains of a 16-token half and pays the per-tile costs (the ring's barrier waits,
// the partial-score exchange with its partner, the softmax's shuffles) once per 32 tokens (H200,
// 16 heads: 1.18x the 16-token-half loop's tokens/s at 8 x 16K, 1.3-1.48x at 32 x 16K and more;
// bench/RESULTS.md, session 6, fp8).
// A tile's stage is released by its two warps (the empty barrier counts 2) and refilled by the
// column-half-0 warp.
//
// Per tile (FP8 rows: [c e4m3 x 512][k_pe bf16 x 64][scale fp32][pad] = 656 bytes):
// - scores: this warp's half of the latent dims in fp16 MMAs (one cvt.rn.f16x2.e4m3x2 per byte
//   pair: every e4m3 value is an fp16 value; q permuted to the cvt's pairs and scaled per head by
//   2^e, build_q), the rope in bf16, S = s_t . (q . k) 2^-e + rope after the MMAs; the two warps
//   add their partial scores through shared memory (xbuf, [worker][ch][parity][16 x 32] floats).
// - online softmax in the log2 domain; P' = p . s_t . 2^c in fp16 with c a running power of two
//   (c_run; the accumulator is rescaled when c falls), so the scale never touches K/V elements.
// - P.V: V fragments by ldmatrix.trans of byte pairs, one byte permute per two columns and a cvt
//   per f16x2 (e4m3 mma.sync is emulated on sm_90: unpacks to f16 and two HMMAs; measured slower).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_decode_mem_layout.cuh"

namespace helix::cuda::mla_mem::split {

// lookup(jj) -> the slot issue(jj, slot) copies tile jj from (the kernel's block-table walk).
template <class C, class Lookup, class Issue>
__device__ __forceinline__ void fp8_tiles(const Args& a, const int* s_cum, int cb, int group, int j,
                                          int cnt, int ck, int len, int n_tiles, bool& q_next,
                                          int worker, int ch, int lane, uint32_t ring,
                                          uint32_t bars, uint32_t q_addr, float* xbuf, int& xpar,
                                          const float (&qi)[2], int& c_run, float (&m_run)[2],
                                          float (&d_run)[2], float (&acc)[32][4], Lookup lookup,
                                          Issue issue) {
  const int g = lane >> 2, t = lane & 3;
  auto full_bar = [&](int s) { return bars + 8 * s; };
  auto empty_bar = [&](int s) { return bars + 8 * (C::kStages + s); };
  for (int jj = j + worker; jj < j + cnt; jj += 4) {
    const int s = jj % C::kStages;
    if (!q_next && jj + kQAhead >= j + cnt) {
      q_next = true;
      prefetch_next_query(a, s_cum, cb, group);
    }
    const bool refill = ch == 0 && jj + C::kStages < n_tiles;
    decltype(lookup(0)) next{0, 0, 0};
    if (refill) next = lookup(jj + C::kStages);
    if (jj >= C::kStages) mbar_wait(empty_bar(s), ((jj / C::kStages) - 1) & 1);
    mbar_wait(full_bar(s), (jj / C::kStages) & 1);
    const int tok0 = (ck + jj - j) * kTile;
    const uint32_t tile = ring + s * C::kStageBytes;
    // 1. scores S[16 heads, 32 tokens], n-tile n = tokens 8 n .., this warp's half of the dims
    float sc[4][4], fscale[4][2];
    {
      // latent: lane (g, t) reads 16 bytes of token 8 n + g per 64 dims; word i feeds
      // k-step i (q is permuted to the byte pairs of the cvt)
      const uint32_t k_addr = tile + g * C::kRowStride + 16 * t;
      float sf[4][2][4] = {}, sp[4][4] = {};
#pragma unroll
      for (int s4 = 0; s4 < L / 128; ++s4) {
        const int s64 = ch * (L / 128) + s4;
        uint32_t w[4][4];
#pragma unroll
        for (int n = 0; n < 4; ++n) {
          const uint4 v = lds128(k_addr + 8 * n * C::kRowStride + 64 * s64);
          w[n][0] = v.x, w[n][1] = v.y, w[n][2] = v.z, w[n][3] = v.w;
        }
        uint4 qa[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) qa[i] = lds128(q_addr + (4 * s64 + i) * 512);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int n = 0; n < 4; ++n)
            mma_f16(sf[n][i & 1], qa[i], cvt_lo(w[n][i]), cvt_hi(w[n][i]));
      }
      // rope (bf16, q unscaled), half of its k-steps each; ldmatrix: tokens 0-7 / 8-15 (+ 16)
      const uint32_t r_addr =
          tile + L + ((lane >> 3) & 1) * 16 + ((lane >> 4) * 8 + (lane & 7)) * C::kRowStride;
#pragma unroll
      for (int i = 0; i < R / 32; ++i) {
        const int kr = ch * (R / 32) + i;
        const uint4 qa = lds128(q_addr + (L / 16 + kr) * 512);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          uint32_t kb[4];
          ldsm_x4(kb, r_addr + 16 * hh * C::kRowStride + kr * 32);
          mma(sp[2 * hh], qa, kb[0], kb[1]);
          mma(sp[2 * hh + 1], qa, kb[2], kb[3]);
        }
      }
#pragma unroll
      for (int n = 0; n < 4; ++n) {
#pragma unroll
        for (int c = 0; c < 2; ++c)
          fscale[n][c] =
              __uint_as_float(lds32(tile + (8 * n + 2 * t + c) * C::kRowStride + kFp8ScaleOff));
#pragma unroll
        for (int e = 0; e < 4; ++e)
          sc[n][e] = fmaf((sf[n][0][e] + sf[n][1][e]) * fscale[n][e & 1], qi[e >> 1], sp[n][e]);
      }
    }
    exchange_partial_scores(sc, xbuf, worker, ch, xpar, lane);
    // 2. online softmax (log2 domain) for rows g (r 0) and g + 8 (r 1); P' = p . s_t . 2^c
    uint4 pa[2];
    {
      float mx[2] = {-INFINITY, -INFINITY};
      mask_scores(sc, mx, tok0, t, len, a.scale_log2);
      // c_tile from the largest scale of the 32 tokens (8 per lane: after the two shuffles
      // every lane holds the same maximum, so c stays warp-uniform)
      float smax = 0.f;
#pragma unroll
      for (int n = 0; n < 4; ++n) smax = fmaxf(smax, fmaxf(fscale[n][0], fscale[n][1]));
      smax = fmaxf(smax, __shfl_xor_sync(0xffffffffu, smax, 1));
      smax = fmaxf(smax, __shfl_xor_sync(0xffffffffu, smax, 2));
      const int ex = smax > 0.f && smax <= 3.4e38f ? exp_above(smax) : 0;  // smax < 2^ex
      const int c_new = min(c_run, min(max(14 - ex, -126), 126));
      const float cf = c_new == c_run  ? 1.f
                       : c_run == 1000 ? 0.f  // first tile: acc is 0
                                       : pow2i(max(c_new - c_run, -126));
      c_run = c_new;
      const float two_c = pow2i(c_new);
      float alpha[2] = {cf, cf}, m_use[2], rs[2] = {0.f, 0.f};
      softmax_rows_update(mx, m_run, d_run, m_use, alpha);
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = exp2f(sc[n][e] - m_use[e >> 1]);
          rs[e >> 1] += p;
          sc[n][e] = p * (fscale[n][e & 1] * two_c);
        }
      add_row_sums(rs, d_run);
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {  // k-step kk: tokens 16 kk .. (n-tiles 2 kk, 2 kk + 1)
        pa[kk].x = pack_f16(sc[2 * kk][0], sc[2 * kk][1]);
        pa[kk].y = pack_f16(sc[2 * kk][2], sc[2 * kk][3]);
        pa[kk].z = pack_f16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
        pa[kk].w = pack_f16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
      }
      rescale_rows(acc, alpha);  // a row's max moved, or c fell
    }
    // 3. O[16, 256 columns of half ch] += P . V. ldmatrix.trans of b16 pairs (8x8 matrices:
    // 8 tokens x 16 bytes; 656-byte rows hit 8 distinct 16-byte bank groups) gives lane (g, t)
    // bytes 2g, 2g + 1 of tokens 2t and 2t + 1; a byte permute pairs the tokens per column, a
    // cvt makes the f16x2 B operand. n-tile 4 G + 2 h + u holds column 32 G + 16 h + 2 n + u
    // at n-index n (write_state's FP8 map).
    {
      const uint32_t v_addr = tile + ch * (L / 2) + ((lane >> 3) & 1) * 8 * C::kRowStride +
                              (lane & 7) * C::kRowStride + (lane >> 4) * 16;
      constexpr int kB = kPvBatch / 2;
#pragma unroll
      for (int G0 = 0; G0 < 8; G0 += kB) {
        uint32_t w[kB][2][4];
#pragma unroll
        for (int i = 0; i < kB; ++i)
#pragma unroll
          for (int kk = 0; kk < 2; ++kk)
            ldsm_x4_t(w[i][kk], v_addr + 16 * kk * C::kRowStride + 32 * (G0 + i));
#pragma unroll
        for (int i = 0; i < kB; ++i) {
          const int G = G0 + i;
#pragma unroll
          for (int kk = 0; kk < 2; ++kk)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const uint32_t x0 = prmt(w[i][kk][2 * h], 0u, 0x3120),
                             x1 = prmt(w[i][kk][2 * h + 1], 0u, 0x3120);
              mma_f16(acc[4 * G + 2 * h], pa[kk], cvt_lo(x0), cvt_lo(x1));
              mma_f16(acc[4 * G + 2 * h + 1], pa[kk], cvt_hi(x0), cvt_hi(x1));
            }
        }
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(empty_bar(s));
    if (refill) {
      mbar_wait(empty_bar(s), (jj / C::kStages) & 1);
      issue(jj + C::kStages, next);
    }
  }
}

}  // namespace helix::cuda::mla_mem::split
