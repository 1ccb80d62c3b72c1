#pragma once
// The memory-bound MLA decode's split kernel (mla_decode_mem.cu): its shared-memory layout, the
// ring depths, and the query builder (the fragment-ordered Q buffer, FP8's per-head scaling).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "ops/cuda/mla_decode_mem_common.cuh"

namespace helix::cuda::mla_mem::split {

using namespace detail;

constexpr int kConsumerWarps = 8;
constexpr int kConsumers = 32 * kConsumerWarps;
constexpr int kThreads = kConsumers;
constexpr int kKSteps = W / 16;                   // 36 k-steps of the score GEMM
constexpr int kQFragBytes = kKSteps * 512;        // A fragments of 16 heads, [k-step][lane][4 regs]
constexpr int kMergeRegs = 128 + 4;               // O fragments + (m, d) of two rows
constexpr int kMergeBytes = kMergeRegs * 32 * 4;  // one warp's state (the other: the Q buffer)
// Score exchange between the two column-half warps of a worker: [worker][ch][parity][8 x 32]
// floats. Shares the merge buffer (used only at sequence ends, fenced by consumers_sync).
constexpr int kXchgBytes = 4 * 2 * 2 * 256 * 4;
static_assert(kXchgBytes <= kMergeBytes, "exchange fits in the merge buffer");
static_assert(kMergeBytes <= kQFragBytes, "a parked state fits in the query buffer");
constexpr int kFp8ScaleOff = L + 2 * R;  // FP8 row: the fp32 scale after k_pe

// Ring depth: FP8 8 stages (6 measured the same within noise), bf16 5 (the most that fits).
constexpr int kFp8Stages = 8, kBf16Stages = 5;
constexpr int kPvBatch = 4;  // FP8 P.V: 32-column groups per batch of loads (8: no faster)
constexpr int kChains = 2;   // FP8 scores: accumulator chains per n-tile (4: no faster)
__device__ __forceinline__ uint32_t cvt_lo(uint32_t x) {
  return e4m3x2_lo_to_f16(x);
}
__device__ __forceinline__ uint32_t cvt_hi(uint32_t x) {
  return e4m3x2_hi_to_f16(x);
}

// kTma (bf16 only): a tile is 9 TMA boxes of [32 rows x 128 bytes] (128-byte swizzle), box k at
// k * 4096 bytes of the stage; else rows at kRowStride.
template <bool kFp8, bool kTma = false>
struct Cfg {
  static_assert(!(kFp8 && kTma), "TMA tiles are bf16 only");
  static constexpr int kRowBytes = kFp8 ? 656 : 2 * W;  // pool row
  static constexpr int kBoxBytes = kTile * 128;         // kTma: one 128-byte column box
  static constexpr int kBoxes = 2 * W / 128;            // kTma: 9
  // by row copies: an odd number of 16-byte units (conflict-free fragments); swizzled: unpadded
  static constexpr int kRowStride = kFp8 || kTma ? kRowBytes : 2 * W + 16;
  static constexpr int kStages = kFp8 ? kFp8Stages : kBf16Stages;
  static constexpr int kStageBytes = kTile * kRowStride;
  static constexpr int kQOff = kStages * kStageBytes;
  static constexpr int kMergeOff = kQOff + kQFragBytes;
  static constexpr int kQinvOff = kMergeOff + kMergeBytes;  // FP8: 2^-e per head row (16 floats)
  static constexpr int kBarOff = kQinvOff + 64;             // full[kStages], empty[kStages]
  static constexpr int kCumOff = kBarOff + 16 * kStages;    // s_cum[B + 1], then s_len[B]
  static size_t smem_bytes(int max_batch) {
    return kCumOff + sizeof(int) * (2 * static_cast<size_t>(max_batch) + 1);
  }
  static_assert(kTma || (kRowStride / 16) % 2 == 1,
                "odd 16-byte row stride: conflict-free fragments");
  static_assert(!kTma || (kStageBytes % 1024 == 0 && kStageBytes == kBoxes * kBoxBytes),
                "swizzle atoms of 1024 bytes");
  static_assert(8 * 33 * 32 * 16 <= kStages * kStageBytes, "the last merge parks 8 warps' states");
};

template <int N>
__device__ __forceinline__ float chain_sum(const float (&c)[N][4], int e) {
  float v = c[0][e];
#pragma unroll
  for (int i = 1; i < N; ++i) v += c[i][e];
  return v;
}
// 2^e, exactly, for e in [-126, 127].
__device__ __forceinline__ float pow2i(int e) {
  return __int_as_float((127 + e) << 23);
}
// ex with x < 2^ex <= 2 x for a normal x > 0 (frexp's exponent); subnormals: -126.
__device__ __forceinline__ int exp_above(float x) {
  return ((__float_as_int(x) >> 23) & 0xff) - 126;
}

__device__ __forceinline__ void consumers_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers) : "memory");
}
// The A fragments of the query's 16 heads (rows past H zero) for all 36 k-steps, in the order the
// consumers read them (one 16-byte load per lane and k-step). FP8: latent k-steps in fp16,
// permuted to the byte pairs of the cvt (k-step 4 j + i, k 2t + u / 2t + 8 + u: dim
// 64 j + 16 t + 4 i + u / + 2), each head scaled by 2^e (qinv[head] = 2^-e); needs a
// consumers_sync between the exponents and their use (the caller's sync after it covers qinv).
template <bool kFp8>
__device__ __forceinline__ void build_q(const Args& a, int b, int group, uint32_t* qbuf,
                                        float* qinv, int ctid) {
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q);
  if constexpr (kFp8) {
    // max |q latent| per head: 16 threads per head, 32 dims each
    const int hl = ctid >> 4, part = ctid & 15, h = group * 16 + hl;
    float mx = 0.f;
    if (h < a.num_heads) {
      const __nv_bfloat16* qh = q + (static_cast<int64_t>(b) * a.num_heads + h) * W + part * 32;
      uint4 w[4];  // 32 bf16: all loads in flight
#pragma unroll
      for (int i = 0; i < 4; ++i) w[i] = __ldg(reinterpret_cast<const uint4*>(qh) + i);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t u[4] = {w[i].x, w[i].y, w[i].z, w[i].w};
#pragma unroll
        for (int k = 0; k < 4; ++k)
          mx = fmaxf(mx, fmaxf(fabsf(__uint_as_float(u[k] << 16)),
                               fabsf(__uint_as_float(u[k] & 0xffff0000u))));
      }
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (part == 0) {
      // max in [2^13, 2^14) after scaling; 0 or not finite: unscaled
      const int e = mx > 0.f && mx <= 3.4e38f ? min(max(14 - exp_above(mx), -120), 120) : 0;
      qinv[hl] = pow2i(-e);
      qinv[16 + hl] = pow2i(e);
    }
    consumers_sync();
  }
  constexpr int kWords = kKSteps * 128;
  constexpr int kRounds = kWords / kConsumers;
  static_assert(kWords % kConsumers == 0, "whole rounds");
  // All loads first (one 4-byte pair each), then the stores: interleaved, the shared stores (may
  // alias q for the compiler) serialised the loads, 18 global round trips (~7 us per sequence).
  uint32_t raw[kRounds];
#pragma unroll
  for (int i = 0; i < kRounds; ++i) {
    const int idx = ctid + kConsumers * i;
    const int ks = idx >> 7, ln = (idx >> 2) & 31, r = idx & 3;
    const int gg = ln >> 2, tt = ln & 3;
    const int row = gg + 8 * (r & 1), khi = r >> 1;
    // FP8, latent k-steps: a0/a1 = bytes 0, 1; a2/a3 = bytes 2, 3 of word ks & 3 of the lane's 16 B
    const int d0 = kFp8 && ks < L / 16 ? 64 * (ks >> 2) + 16 * tt + 4 * (ks & 3) + 2 * khi
                                       : 16 * ks + 2 * tt + 8 * khi;
    const int h = group * 16 + row;
    raw[i] = h < a.num_heads ? __ldg(reinterpret_cast<const unsigned int*>(
                                   q + (static_cast<int64_t>(b) * a.num_heads + h) * W + d0))
                             : 0u;
  }
#pragma unroll
  for (int i = 0; i < kRounds; ++i) {
    const int idx = ctid + kConsumers * i;
    const int ks = idx >> 7, ln = (idx >> 2) & 31, r = idx & 3;
    const int row = (ln >> 2) + 8 * (r & 1);
    uint32_t v = raw[i];  // bf16 pair: as is
    if (kFp8 && ks < L / 16) {
      const float sc = qinv[16 + row];
      v = pack_f16(__uint_as_float(v << 16) * sc, __uint_as_float(v & 0xffff0000u) * sc);
    }
    qbuf[idx] = v;
  }
}

}  // namespace helix::cuda::mla_mem::split
