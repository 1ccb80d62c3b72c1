#pragma once
// The Hopper MLA decode kernel for many heads (H >= 64, L 512, R 64, bf16 or FP8 latent KV): the
// compute-bound case (see mla_decode_bf16.h for the contract). Included by mla_decode_sm90.cu.
//
// CTA = 64 query heads (one wgmma M) x a contiguous range of the batch's 64-token tiles (the
// same even split over all SMs as the mma.sync kernels), 3 warpgroups:
//   WG2 (producer, one thread): TMA loads of each tile, 9 column chunks of [64 tokens x 64 dims]
//     into 128B-swizzled shared memory (one mbarrier per chunk, so the score MMAs start on the
//     first chunk that lands), 2 stages. A stage is refilled in three parts as their readers
//     finish: the rope chunk after the tile's scores, V_L (columns 0..255) after WG0's P.V,
//     V_R after WG1's; the rope chunk is loaded and read first.
//   WG0 / WG1 (consumers): tiles go in pairs (a, b). WG0 computes S_a = Q K_a^T, WG1 S_b, at the
//     same time (wgmma m64n64k16, K over 576: latent part of Q from shared memory, rope part
//     from registers). Online softmax in registers: WG0 first (running max m -> m0), then WG1
//     from m0 (-> m1); each hands its P (bf16) and row max to the other through shared memory.
//     O [64, 512] fp32 lives in registers split by columns: WG0 holds O[:, 0:256], WG1
//     O[:, 256:512]; each does O = O * 2^(m - m0) + P_a V_a, then O = O * 2^(m0 - m1) + P_b V_b
//     (wgmma m64n256k16, V = the first 512 columns of the same smem tile, MN-major; its own P
//     from registers, the other's from shared memory). While one warpgroup rescales or runs its
//     softmax the other's MMAs keep the tensor cores busy.
// At a sequence boundary the CTA writes the finished sequence (final, or a partial for the
// combine kernel) and loads the next query (cp.async, all pieces in flight). FP8 KV
// (mla_decode_sm90_fp8.cuh): the raw e4m3 chunks are widened to this same bf16 layout in shared
// memory (tile a by three more producer warps and WG0, tile b by WG1 itself), the token scales
// applied per score column and folded into P; WG0 frees a tile's V_L part as soon as its P_a.V is
// done, and WG1 runs P_a.V before tile b's scores, so the stage of tile a + 2 is refilled without
// waiting for tile b. Both kernels go out with programmatic dependent launch (mla_decode_sm90.cu).
// Rows of a tile past the sequence's end are zeroed in shared memory before the P.V MMAs (they may
// hold anything, NaN included; their P is 0).
#include <cuda.h>  // CUtensorMap (type only; the encoder is fetched through the runtime)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_bf16_args.h"
#include "ops/cuda/mla_decode_sm90_ptx.cuh"

namespace helix::cuda::mla_sm90 {

using mla_bf16::Args;

constexpr int kL = 512, kR = 64, kW = kL + kR;
constexpr int kTile = 64;  // tokens per KV tile
// The split over CTAs cuts the batch into units of two tiles (a consumer pair), at least one per
// CTA: a CTA whose range crosses a sequence boundary then gets even-sized pieces (only a
// sequence's last tile can be alone), not a half-idle pair on each side of the boundary.
constexpr int kUnit = 2 * kTile;
constexpr int kHeads = 64;                // heads per CTA
constexpr int kChunks = kW / 64;          // 64-column chunks of a row: 8 latent + 1 rope
constexpr int kChunkBytes = kTile * 128;  // [64 rows x 128 B], 128B-swizzled
constexpr int kStageBytes = kChunks * kChunkBytes;
constexpr int kStages = 2;
constexpr int kThreads = 384;
constexpr int kConsumerThreads = 256;
// Shared memory carve-up (bytes from a 1024-aligned base).
constexpr int kQOff = 0;  // Q latent part: 8 chunks [64 heads x 64 dims]
constexpr int kKvOff = kQOff + (kL / 64) * kChunkBytes;
constexpr int kPOff = kKvOff + kStages * kStageBytes;  // P of a pair's two tiles
constexpr int kPBytes = kHeads * 128;                  // [64 heads x 64 tokens] bf16
constexpr int kMOff = kPOff + 2 * kPBytes;             // row max after tile a / b: [2][64] f32
constexpr int kLOff = kMOff + 2 * kHeads * 4;          // row sums of WG0 / WG1: [2][64] f32
constexpr int kBarOff = kLOff + 2 * kHeads * 4;        // full[2][9], empty[2][3], raw[2][4]
constexpr int kRawBarOff = kBarOff + 8 * (kStages * kChunks + kStages * 3);  // FP8 raw chunks
constexpr int kCumOff = kRawBarOff + 8 * kStages * 4;                        // bf16: s_cum[B + 1]
constexpr int kScaleOff = kCumOff;  // FP8: scales [2][64] f32, then s_cum
constexpr int kScaleBytes = kStages * kTile * 4;
constexpr int kFixedBytes = kCumOff;

// Named barriers (0 is __syncthreads).
enum : int {
  kBarPa = 1,
  kBarPb = 2,
  kBarP0Free = 3,
  kBarP1Free = 4,
  kBarConsumers = 5,
  kBarWg = 6
};
// Parts of a stage with their own readers, each refilled once its last reader is done: the rope
// chunk (the scores only), latent columns 0..255 (V_L) and 256..511 (V_R).
enum : int { kPartRope = 0, kPartL = 1, kPartR = 2 };

}  // namespace helix::cuda::mla_sm90
#include "ops/cuda/mla_decode_sm90_fp8.cuh"   // uses the constants above
#include "ops/cuda/mla_decode_sm90_math.cuh"  // the consumers' per-tile steps; uses both
namespace helix::cuda::mla_sm90 {

using mla_combine::seq_tokens;

// One consumer warpgroup's whole loop (WG 0 or 1: separate code, so no path mixes the two
// warpgroups' in-flight MMAs).
template <int WG, bool kFp8>
__device__ __forceinline__ void consumer(const Args& a, uint8_t* smem, const int* s_cum,
                                         uint32_t bar_base, int t_begin, int t_end, int n_tiles,
                                         int cb, int ck, int cta, int group) {
  auto full_bar = [&](int s) { return bar_base + 8 * (s * kChunks); };  // + 8 c
  const int lane = threadIdx.x & 31;
  // One arrival per warp: the part of stage s this warpgroup has finished reading.
  auto release = [&](int s, int part) {
    if (lane == 0) mbar_arrive(bar_base + 8 * (kStages * kChunks + 3 * s + part));
  };
  const int tid = threadIdx.x;
  const int tw = tid & 127, wq = tw >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int r0 = 16 * wq + g;  // rows r0, r0 + 8 of every fragment
  uint8_t* s_q = smem + kQOff;
  uint8_t* s_kv = smem + kKvOff;
  uint8_t* s_p = smem + kPOff;
  float* s_m = reinterpret_cast<float*>(smem + kMOff);
  float* s_l = reinterpret_cast<float*>(smem + kLOff);
  const float* s_sc = reinterpret_cast<const float*>(smem + kScaleOff);  // FP8 only
  const uint32_t q_u32 = smem_u32(s_q), kv_u32 = smem_u32(s_kv), p_u32 = smem_u32(s_p);
  const int h_base = group * kHeads;

  // The P buffers start free: pre-arrive the barriers the other side syncs on first.
  if constexpr (WG == 1) bar_arrive(kBarP0Free, kConsumerThreads);
  if constexpr (WG == 0) bar_arrive(kBarP1Free, kConsumerThreads);

  float o[128];
  float s[32];
  uint32_t qpe[4][4];
  uint32_t p[4][4];
  int pending_stage = -1;  // WG0: stage of tile b whose P.V is still in flight (released later)

  auto release_pending = [&]() {  // WG0, after a wgmma wait: tile b's stage and P buffer free
    if (pending_stage >= 0) {
      release(pending_stage, kPartL);
      bar_arrive(kBarP1Free, kConsumerThreads);
      pending_stage = -1;
    }
  };

  int i = 0;  // CTA-local tile index
  while (i < n_tiles) {
    const int len = seq_tokens(a, cb);
    const int seq_tiles = (len + kTile - 1) / kTile;
    const int seg_n = (seq_tiles - ck) < (n_tiles - i) ? (seq_tiles - ck) : (n_tiles - i);
    // ---- new sequence: its query (latent part to smem, rope part to registers) ----
    if constexpr (WG == 0) {
      wg_wait<0>();
      release_pending();
    }
    bar_sync(kBarConsumers, kConsumerThreads);  // every MMA on the old query finished
    {
      const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q);
      const int64_t qrow0 = static_cast<int64_t>(cb) * a.num_heads;
      // Asynchronous copies: all 16 pieces of a thread in flight at once (rows past the heads
      // zero-filled from a valid address).
      for (int x = tid; x < kHeads * (kL / 8); x += kConsumerThreads) {
        const int r = x >> 6, j = x & 63;  // row, 16-byte piece
        const int h = h_base + r;
        const bool ok = h < a.num_heads;
        cp_async16(smem_u32(s_q + (j >> 3) * kChunkBytes + r * 128 + sw128(r, j & 7)),
                   q + (qrow0 + (ok ? h : 0)) * kW + 8 * j, ok ? 16u : 0u);
      }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int r = r0 + 8 * (x & 1), col = kL + 16 * kk + 8 * (x >> 1) + 2 * t;
          const int h = h_base + r;
          qpe[kk][x] =
              h < a.num_heads ? *reinterpret_cast<const uint32_t*>(q + (qrow0 + h) * kW + col) : 0u;
        }
    }
    cp_async_wait_all();
    if constexpr (kFp8) {
      // The latent part of Q times 2^64 (exact), this thread's own pieces (see kFp8ScaleBias).
      for (int x = tid; x < kHeads * (kL / 8); x += kConsumerThreads) {
        const int r = x >> 6, j = x & 63;
        uint4* pc =
            reinterpret_cast<uint4*>(s_q + (j >> 3) * kChunkBytes + r * 128 + sw128(r, j & 7));
        uint4 v = *pc;
        const __nv_bfloat162 b2(kFp8QBias, kFp8QBias);
        __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
        for (int e = 0; e < 4; ++e) h[e] = __hmul2(h[e], b2);
        *pc = v;
      }
    }
    fence_async_smem();
    bar_sync(kBarConsumers, kConsumerThreads);
#pragma unroll
    for (int x = 0; x < 128; ++x) o[x] = 0.f;
    float m_0 = -INFINITY, m_1 = -INFINITY;  // running max (log2 domain), rows r0 / r0 + 8
    float l_0 = 0.f, l_1 = 0.f;              // this thread's part of this WG's row sums

    for (int jt = 0; jt < seg_n; jt += 2) {
      const bool has_b = jt + 1 < seg_n;
      const int ia = i + jt, ib = ia + 1;
      const int sa = ia & 1, sb = ib & 1;
      const uint32_t pha = (ia >> 1) & 1, phb = (ib >> 1) & 1;
      const int va = tile_valid(len, (ck + jt) * kTile);
      const int vb = tile_valid(len, (ck + jt + 1) * kTile);
      if constexpr (WG == 0) {
        // S_a, softmax from m -> m0, P_a to registers and smem.
        // The previous pair's P_b.V_L completes before this tile's latent chunks: release its
        // V_L part there, not after the whole S_a (+2-4% at 64K).
        score_mmas<kFp8>(
            s, q_u32, kv_u32 + sa * kStageBytes, full_bar(sa), pha, qpe, s_sc + sa * kTile, t,
            [&] {
              if (pending_stage >= 0) {
                wg_wait<1>();
                release_pending();
              }
            },
            [&](int rc) {
              if constexpr (kFp8) {
                // Row groups 0..kWg0Groups - 1 of raw chunk rc (the converter warps widen the
                // rest): its raw chunk landed, and for rc 3 (slots 6, 7) the stage's V_R part is
                // free.
                const uint32_t raw_base = smem_u32(smem + kRawBarOff);
                if (rc == 3 && ia >= kStages)
                  mbar_wait(bar_base + 8 * (kStages * kChunks + 3 * sa + kPartR),
                            ((ia >> 1) - 1) & 1);
                mbar_wait(raw_base + 8 * (4 * sa + rc), pha);
                convert_chunk<kWg0Groups / 4>(s_kv + sa * kStageBytes, rc, wq, 4, kWg0Groups, lane,
                                              va);
                bar_sync(kBarWg + WG, 128);
              }
            });
        wg_wait<0>();
        release_pending();
        release(sa, kPartRope);
        float mx0, mx1;
        scale_mask(s, va, t, a.scale_log2, mx0, mx1);
        const float n0 = fmaxf(m_0, mx0), n1 = fmaxf(m_1, mx1);  // finite: a tile has a token
        const float f0 = exp2_fast(m_0 - n0), f1 = exp2_fast(m_1 - n1);
        bar_sync(kBarP0Free, kConsumerThreads);
        float sum0, sum1;
        exp_pack<kFp8>(s, n0, n1, p, s_p, r0, t, s_sc + sa * kTile, sum0, sum1);
        if (t == 0) {
          s_m[r0] = n0;
          s_m[r0 + 8] = n1;
        }
        fence_async_smem();
        bar_arrive(kBarPa, kConsumerThreads);
        l_0 = l_0 * f0 + sum0;
        l_1 = l_1 * f1 + sum1;
        m_0 = n0;
        m_1 = n1;
        // O_L = O_L 2^(m - m0) + P_a V_a[:, 0:256]
        rescale(o, f0, f1);
        if (va < kTile) zero_tail(s_kv + sa * kStageBytes, 0, va, tw, WG);
        pv_rs(o, p, kv_u32 + sa * kStageBytes);
        if constexpr (kFp8) {
          // FP8: tile a + 2's raw chunks land in this V_L part; free it before waiting for P_b
          // (which waits for tile b's widening), not after.
          wg_wait<0>();
          release(sa, kPartL);
        }
        if (has_b) {
          bar_sync(kBarPb, kConsumerThreads);  // P_b and m1 in smem
          const float b0 = s_m[kHeads + r0], b1 = s_m[kHeads + r0 + 8];
          const float g0 = exp2_fast(m_0 - b0), g1 = exp2_fast(m_1 - b1);
          if constexpr (!kFp8) {
            wg_wait<0>();
            release(sa, kPartL);
          }
          rescale(o, g0, g1);
          l_0 *= g0;
          l_1 *= g1;
          m_0 = b0;
          m_1 = b1;
          if (vb < kTile) zero_tail(s_kv + sb * kStageBytes, 0, vb, tw, WG);
          pv_ss(o, p_u32 + kPBytes, kv_u32 + sb * kStageBytes);
          pending_stage = sb;  // released after the next wait
          if constexpr (kFp8) {
            // FP8: the next tile b's raw chunks land in this V_L part; free it now rather than
            // one score MMA later (the widening after the load is on the critical path).
            wg_wait<0>();
            release_pending();
          }
        } else if constexpr (!kFp8) {
          wg_wait<0>();
          release(sa, kPartL);
        }
      } else if constexpr (kFp8) {
        // FP8, WG1: P_a V_a[:, 256:512] goes first (it needs only WG0's P_a), then tile b's scores
        // (which wait for its widening); tile a's V_R part and the P_a buffer are freed as soon as
        // that P.V is done, so tile a + 2's widening does not wait for tile b's.
        if (has_b) {
          // Tile b is this warpgroup's to widen (mla_decode_sm90_fp8.cuh), before it waits for
          // P_a: its V_R part was released by this warpgroup's last P.V, its raw chunks are
          // waited for here (leaving it to the converter warps, as tile a, was 1.02-1.07x slower;
          // they widening 7 of its 16 row groups, about as slow).
          const uint32_t raw_base = smem_u32(smem + kRawBarOff);
          convert_tile<4, 4>(
              s_kv + sb * kStageBytes, wq, 4, 16, lane, vb,
              [&](int c) { mbar_wait(raw_base + 8 * (4 * sb + c), phb); }, [] {}, [](int) {});
          bar_sync(kBarWg + WG, 128);
        }
        bar_sync(kBarPa, kConsumerThreads);  // P_a and m0 in smem
        const float a0 = s_m[r0], a1 = s_m[r0 + 8];
        rescale(o, exp2_fast(m_0 - a0), exp2_fast(m_1 - a1));
        if (va < kTile) zero_tail(s_kv + sa * kStageBytes, 4, va, tw, WG);
        pv_ss(o, p_u32, kv_u32 + sa * kStageBytes + 4 * kChunkBytes);
        auto free_a = [&] {
          release(sa, kPartR);
          bar_arrive(kBarP0Free, kConsumerThreads);
        };
        float n0 = a0, n1 = a1, sum0 = 0.f, sum1 = 0.f;
        if (has_b) {
          score_mmas<kFp8>(s, q_u32, kv_u32 + sb * kStageBytes, full_bar(sb), phb, qpe,
                           s_sc + sb * kTile, t, [&] {
                             wg_wait<1>();  // all but the latent score MMAs: the P_a.V above
                             free_a();
                           });
          wg_wait<0>();
          release(sb, kPartRope);
          float mx0, mx1;
          scale_mask(s, vb, t, a.scale_log2, mx0, mx1);
          n0 = fmaxf(a0, mx0);
          n1 = fmaxf(a1, mx1);
          bar_sync(kBarP1Free, kConsumerThreads);
          exp_pack<kFp8>(s, n0, n1, p, s_p + kPBytes, r0, t, s_sc + sb * kTile, sum0, sum1);
          if (t == 0) {
            s_m[kHeads + r0] = n0;
            s_m[kHeads + r0 + 8] = n1;
          }
          fence_async_smem();
          bar_arrive(kBarPb, kConsumerThreads);
        } else {
          wg_wait<0>();
          free_a();
        }
        l_0 = l_0 * exp2_fast(m_0 - n0) + sum0;
        l_1 = l_1 * exp2_fast(m_1 - n1) + sum1;
        if (has_b) {
          rescale(o, exp2_fast(a0 - n0), exp2_fast(a1 - n1));
          if (vb < kTile) zero_tail(s_kv + sb * kStageBytes, 4, vb, tw, WG);
          pv_rs(o, p, kv_u32 + sb * kStageBytes + 4 * kChunkBytes);
          wg_wait<0>();
          release(sb, kPartR);
        }
        m_0 = n0;
        m_1 = n1;
      } else {
        float n0, n1, sum0 = 0.f, sum1 = 0.f, mx0 = -INFINITY, mx1 = -INFINITY;
        if (has_b) {
          score_mmas<kFp8>(s, q_u32, kv_u32 + sb * kStageBytes, full_bar(sb), phb, qpe,
                           s_sc + sb * kTile, t, [] {});
          wg_wait<0>();
          release(sb, kPartRope);
          scale_mask(s, vb, t, a.scale_log2, mx0, mx1);
        }
        bar_sync(kBarPa, kConsumerThreads);  // P_a and m0 in smem
        const float a0 = s_m[r0], a1 = s_m[r0 + 8];
        n0 = fmaxf(a0, mx0);
        n1 = fmaxf(a1, mx1);
        if (has_b) {
          bar_sync(kBarP1Free, kConsumerThreads);
          exp_pack<kFp8>(s, n0, n1, p, s_p + kPBytes, r0, t, s_sc + sb * kTile, sum0, sum1);
          if (t == 0) {
            s_m[kHeads + r0] = n0;
            s_m[kHeads + r0 + 8] = n1;
          }
          fence_async_smem();
          bar_arrive(kBarPb, kConsumerThreads);
        }
        const float e0 = exp2_fast(m_0 - n0), e1 = exp2_fast(m_1 - n1);
        l_0 = l_0 * e0 + sum0;
        l_1 = l_1 * e1 + sum1;
        // O_R = O_R 2^(m - m0) + P_a V_a[:, 256:512]
        rescale(o, exp2_fast(m_0 - a0), exp2_fast(m_1 - a1));
        if (va < kTile) zero_tail(s_kv + sa * kStageBytes, 4, va, tw, WG);
        pv_ss(o, p_u32, kv_u32 + sa * kStageBytes + 4 * kChunkBytes);
        wg_wait<0>();
        release(sa, kPartR);
        bar_arrive(kBarP0Free, kConsumerThreads);
        if (has_b) {
          rescale(o, exp2_fast(a0 - n0), exp2_fast(a1 - n1));
          if (vb < kTile) zero_tail(s_kv + sb * kStageBytes, 4, vb, tw, WG);
          pv_rs(o, p, kv_u32 + sb * kStageBytes + 4 * kChunkBytes);
          wg_wait<0>();  // tile b's stage must be released before its refill is waited on
          release(sb, kPartR);
        }
        m_0 = n0;
        m_1 = n1;
      }
    }

    // ---- end of the sequence's tiles in this CTA: row sums of both WGs, then the output ----
    if constexpr (WG == 0) {
      wg_wait<0>();
      release_pending();
    }
    l_0 += __shfl_xor_sync(0xffffffffu, l_0, 1);
    l_0 += __shfl_xor_sync(0xffffffffu, l_0, 2);
    l_1 += __shfl_xor_sync(0xffffffffu, l_1, 1);
    l_1 += __shfl_xor_sync(0xffffffffu, l_1, 2);
    if (t == 0) {
      s_l[WG * kHeads + r0] = l_0;
      s_l[WG * kHeads + r0 + 8] = l_1;
    }
    bar_sync(kBarConsumers, kConsumerThreads);
    const float lt0 = s_l[r0] + s_l[kHeads + r0], lt1 = s_l[r0 + 8] + s_l[kHeads + r0 + 8];
    const bool complete = s_cum[cb] >= t_begin && s_cum[cb + 1] <= t_end;
    const int64_t prow = mla_combine::partial_row(
        a, group, cta, mla_combine::partial_slot(s_cum, cb, t_begin), kHeads);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int r = r0 + 8 * rr, h = h_base + r;
      if (h >= a.num_heads) continue;
      const float l = rr ? lt1 : lt0, m = rr ? m_1 : m_0;
      const float inv = (kFp8 ? kFp8OutBias : 1.f) / l;
      const int64_t orow = static_cast<int64_t>(cb) * a.num_heads + h;
      if (WG == 0 && t == 0) {
        const float lse = mla_combine::lse_from_log2(m, l);
        if (complete)
          a.lse[orow] = lse;
        else
          a.part_lse[prow + r] = lse;
      }
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        const int col = 256 * WG + 8 * j + 2 * t;
        const float v0 = o[4 * j + 2 * rr] * inv, v1 = o[4 * j + 2 * rr + 1] * inv;
        if (!complete) {
          *reinterpret_cast<float2*>(a.part_out + (prow + r) * kL + col) = make_float2(v0, v1);
        } else if (a.out_bf16) {
          *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(a.out) + orow * kL + col) =
              __floats2bfloat162_rn(v0, v1);
        } else {
          *reinterpret_cast<float2*>(static_cast<float*>(a.out) + orow * kL + col) =
              make_float2(v0, v1);
        }
      }
    }
    i += seg_n;
    ck = 0;
    ++cb;
    while (cb < a.batch && s_cum[cb + 1] == s_cum[cb]) ++cb;
  }
  // Balance the P-buffer barriers' pre-arrivals.
  if constexpr (WG == 0) bar_sync(kBarP0Free, kConsumerThreads);
  if constexpr (WG == 1) bar_sync(kBarP1Free, kConsumerThreads);
}

}  // namespace helix::cuda::mla_sm90
#include "ops/cuda/mla_decode_sm90_producer.cuh"
namespace helix::cuda::mla_sm90 {

template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1)
    mla_sm90_kernel(const __grid_constant__ CUtensorMap kv_map, const Args a) {
  extern __shared__ __align__(1024) uint8_t smem[];
  const int tid = threadIdx.x;
  if (tid == 0 && (smem_u32(smem) & 1023u) != 0) __trap();
  int* s_cum = reinterpret_cast<int*>(smem + kCumOff + (kFp8 ? kScaleBytes : 0));
  // full[2][9], empty[2][3] (see the producer), FP8 raw chunk c of stage s: raw_base + 8 (4 s + c)
  const uint32_t bar_base = smem_u32(smem + kBarOff), raw_base = smem_u32(smem + kRawBarOff);
  const int warp = tid >> 5, lane = tid & 31;
  // bf16: the blocks go out in (range, group) order, so the head groups' CTAs that read the same
  // tiles get consecutive block indices, and likely neighbouring SMs. On H200 that takes 0.86-0.95x
  // the time of the (group, range) order at 16K and 0.93-1.00x at 64K-128K (bench/RESULTS.md,
  // "sm90 MLA kernel (session 6, h128)"). FP8 keeps the grid's order: its speed with this one was
  // 0.98x to 1.09x, mixed, and FP8 is tuned on its own.
  int cta = blockIdx.x, group = blockIdx.y;
  if constexpr (!kFp8) {
    const int lin = blockIdx.y * gridDim.x + blockIdx.x;
    cta = lin / gridDim.y;
    group = lin % gridDim.y;
  }

  if (tid == 32) {
    // FP8: a latent chunk is full when the converter warps have widened it.
    for (int i = 0; i < kStages * kChunks; ++i)
      mbar_init(bar_base + 8 * i, kFp8 && i % kChunks != kChunks - 1 ? kConvWarps : 1);
    for (int i = 0; i < kStages * 4; ++i) mbar_init(raw_base + 8 * i, 1);
    for (int i = 0; i < kStages * 3; ++i)  // one arrival per warp of the part's last reader
      mbar_init(bar_base + 8 * (kStages * kChunks + i), 4);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if (tid == 256)
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&kv_map))
                 : "memory");
  // Launched with programmatic dependent launch: the kernel before may still run until here
  // (nothing above reads global memory). Then the combine kernel may be scheduled: it waits for
  // this grid to finish before it reads the partials.
  grid_dep_wait();
  grid_dep_launch();
  if (warp == 0) mla_combine::tile_prefix_sums<kUnit>(a, s_cum, nullptr, lane);
  __syncthreads();
  mla_combine::TileRange tr;
  if (!mla_combine::cta_tile_range<1>(a, s_cum, cta, tr)) return;
  const int t_begin = tr.t_begin, t_end = tr.t_end;  // units (s_cum counts units)
  int cb = tr.cb, ck = 2 * tr.ck;                    // the first tile: sequence, tile within it
  // Tiles of the range: every piece but the last ends with its sequence.
  int n_tiles = 0;
  for (int b = cb, k = tr.ck, u = t_begin; u < t_end; ++b, k = 0) {
    const int take =
        s_cum[b + 1] - s_cum[b] - k < t_end - u ? s_cum[b + 1] - s_cum[b] - k : t_end - u;
    const int tiles = (seq_tokens(a, b) + kTile - 1) / kTile;
    n_tiles += (2 * (k + take) < tiles ? 2 * (k + take) : tiles) - 2 * k;
    u += take;
  }

  if (warp >= 8) {
    // ---------------- producer ----------------
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if constexpr (kFp8) {
      if (warp >= 9) {
        fp8_converter(a, smem, s_cum, bar_base, raw_base, warp - 9, lane, n_tiles, cb, ck);
        return;
      }
    }
    // The other producer threads leave (kept waiting, they slowed the kernel by a third).
    if (warp != 8 || lane != 0) return;
    producer<kFp8>(kv_map, a, smem, s_cum, bar_base, raw_base, n_tiles, cb, ck);
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  // Through a shuffle so the compiler sees the role warp-uniform.
  if (__shfl_sync(0xffffffffu, warp >> 2, 0) == 0)
    consumer<0, kFp8>(a, smem, s_cum, bar_base, t_begin, t_end, n_tiles, cb, ck, cta, group);
  else
    consumer<1, kFp8>(a, smem, s_cum, bar_base, t_begin, t_end, n_tiles, cb, ck, cta, group);
}

}  // namespace helix::cuda::mla_sm90
