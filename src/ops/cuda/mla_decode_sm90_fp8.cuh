#pragma once
// FP8 (e4m3) latent KV in the sm90 MLA decode kernel (mla_decode_sm90.cuh): the producer's TMA
// loads of an FP8 tile and the converter warps that dequantise it in shared memory.
//
// Pool row (656 bytes): [c (512 e4m3), k_pe (64 bf16), scale (fp32), pad]; c ~= e4m3 * scale.
// The pool is mapped as bytes [rows, 656]; a 128-byte box column holds 128 e4m3 of c (raw chunk
// c = 0..3) or the 64 bf16 of k_pe. The rope box lands where the bf16 path puts its rope chunk
// (slot 8). The four raw chunks land in slots 0..3 of the stage (its V_L part, freed first) and
// are widened in place to the bf16 layout of the bf16 path (raw chunk c -> bf16 slots 2c, 2c+1;
// e4m3 -> bf16 is exact), highest chunk first: raw 3 -> slots 6, 7 (the V_R part, once free), raw 2
// -> 4, 5, raw 1 -> 2, 3 (raw 2 and 3 already read), raw 0 -> 0, 1 (itself, in place). Each
// converter warp owns whole rows, so a row's raw bytes are all read (by the warp's lanes, then
// __syncwarp) before any of that row is written, and the in-place step is safe. Each bf16
// slot's full barrier completes when the three converter warps arrive; the consumers then read
// the slots exactly as in the bf16 path (latent chunks highest first, the order they appear).
// The per-token scales go to shared memory ([2 stages][64] fp32, 0 past the end; the producer
// copies them with cp.async, completing on raw chunk 3's barrier, which the converters wait on
// first); the consumers
// apply them per score column (S = scale_t * q.c_t) and fold them into P for the P.V MMAs
// (O = sum_t (P_t scale_t) c_t; the row sums take P unscaled), so the kernel's only roundings
// are those of the bf16 path (P to bf16), not a second one of c.
#include <cuda_fp8.h>

#include "ops/cuda/mla_decode_sm90_ptx.cuh"

namespace helix::cuda::mla_sm90 {

constexpr int kFp8RowBytes = 656;
constexpr int kFp8ScaleOff = 640;  // bytes: after c (512) and k_pe (128)
constexpr int kConvWarps = 3;      // producer-warpgroup warps 9..11
#ifdef HELIX_SM90_FP8_WG1CVT
constexpr bool kWg1Convert = true;
#else
constexpr bool kWg1Convert = false;
#endif
#ifdef HELIX_SM90_FP8_EARLY_L
constexpr bool kFp8EarlyRelease = true;
#else
constexpr bool kFp8EarlyRelease = false;
#endif
#ifdef HELIX_SM90_FP8_LATE_B
constexpr bool kFp8LateB = true;
#else
constexpr bool kFp8LateB = false;
#endif
#ifdef HELIX_SM90_FP8_PA_FIRST
constexpr bool kFp8PaFirst = true;
#else
constexpr bool kFp8PaFirst = false;
#endif
// Tile b of a consumer pair: the converter warps widen 4-row groups 0..kWg1Group - 1, WG1 the rest
// itself (it waits for that tile anyway).
#ifndef HELIX_SM90_FP8_WG1_GROUP
#define HELIX_SM90_FP8_WG1_GROUP 7
#endif
constexpr int kWg1Group = HELIX_SM90_FP8_WG1_GROUP;

#ifdef HELIX_SM90_FP8_CVT_OLD
// 16 e4m3 (one 16-byte piece) -> 16 bf16 (two 16-byte pieces), exactly.
__device__ __forceinline__ void widen16(const uint4& v, uint4& lo, uint4& hi) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t o[8];
#pragma unroll
  for (int k = 0; k < 4; ++k)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(
          static_cast<__nv_fp8x2_storage_t>(w[k] >> (16 * h)), __NV_E4M3);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&r));
      o[2 * k + h] = pack_bf16(f.x, f.y);
    }
  lo = make_uint4(o[0], o[1], o[2], o[3]);
  hi = make_uint4(o[4], o[5], o[6], o[7]);
}
#else
// Two e4m3 (bytes b0 = sel & 7, b1 = sel >> 12 of w, as __byte_perm selects them) -> bf16x2,
// exactly, in integer ops and one bf16 multiply: an e4m3 byte s.eeee.mmm moved to bf16 bits
// s.0000eeee.mmm0000 is the same value times 2^(7 - 127) (for e4m3 subnormals too: they land as
// bf16 subnormals, which the bf16 multiply takes exactly); times 2^120 undoes the bias. The
// conversion instructions (cvt e4m3x2 -> f16x2, f16 -> f32, f32 -> bf16x2) run at a quarter of the
// integer rate or less, and the widening of a tile is on the FP8 path's critical chain.
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t w, uint32_t sel) {
  const uint32_t t = __byte_perm(w, 0u, sel);  // [0, b0, 0, b1]
  const uint32_t b = ((t & 0x7f007f00u) >> 4) | (t & 0x80008000u);
  const __nv_bfloat162 r =
      __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&b), __nv_bfloat162(0x1p120f, 0x1p120f));
  return *reinterpret_cast<const uint32_t*>(&r);
}
// 16 e4m3 (one 16-byte piece) -> 16 bf16 (two 16-byte pieces), exactly.
__device__ __forceinline__ void widen16(const uint4& v, uint4& lo, uint4& hi) {
  lo = make_uint4(e4m3x2_to_bf16x2(v.x, 0x1404u), e4m3x2_to_bf16x2(v.x, 0x3424u),
                  e4m3x2_to_bf16x2(v.y, 0x1404u), e4m3x2_to_bf16x2(v.y, 0x3424u));
  hi = make_uint4(e4m3x2_to_bf16x2(v.z, 0x1404u), e4m3x2_to_bf16x2(v.z, 0x3424u),
                  e4m3x2_to_bf16x2(v.w, 0x1404u), e4m3x2_to_bf16x2(v.w, 0x3424u));
}
#endif

// One warp's part of a tile in `stage` (raw chunks in slots 0..3): the 4-row groups g0, g0 +
// stride, ... below g_end (the converter warps: cw, 3; a tile's 16 groups), raw chunk 3 first,
// arriving on the bf16 slots' full barriers as each chunk is done. Rows at or past `valid` are
// written as zeros (they may hold anything). Each warp owns whole rows, and the pieces of a batch
// of groups are all loaded before any is written: every raw byte of a row is read before the
// in-place step (c == 0) writes it.
template <class WaitRaw, class WaitR, class Arrive>
__device__ __forceinline__ void convert_tile(uint8_t* stage, int g0, int stride, int g_end, int lane,
                                             int valid, WaitRaw&& wait_raw, WaitR&& wait_r,
                                             Arrive&& arrive) {
  constexpr int kGroups = (16 + kConvWarps - 1) / kConvWarps;  // most 4-row groups of a warp
#ifndef HELIX_SM90_FP8_BATCH
#define HELIX_SM90_FP8_BATCH 2
#endif
  constexpr int kBatch = HELIX_SM90_FP8_BATCH;  // groups loaded before any is written
  const int p = lane & 7;                       // physical piece of a row
  for (int c = 3; c >= 0; --c) {
    if (c == 3) wait_r();  // slots 6, 7 are the V_R part
    wait_raw(c);
#pragma unroll
    for (int k0 = 0; k0 < kGroups; k0 += kBatch) {
      uint4 v[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int g = g0 + stride * (k0 + k), r = 4 * g + (lane >> 3);  // group, row
        if (g < g_end)
          v[k] = *reinterpret_cast<const uint4*>(stage + c * kChunkBytes + r * 128 + p * 16);
      }
      __syncwarp();  // these rows' raw pieces are all read before any is written (c == 0)
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int g = g0 + stride * (k0 + k), r = 4 * g + (lane >> 3);
        if (g < g_end) {
          const int lp = p ^ (r & 7);  // logical piece: e4m3 dims 16 lp .. 16 lp + 15 of chunk c
          uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
          if (r < valid) widen16(v[k], lo, hi);
          uint8_t* dst = stage + (2 * c + (lp >> 2)) * kChunkBytes + r * 128;
          const int q = 2 * (lp & 3);
          *reinterpret_cast<uint4*>(dst + ((q ^ (r & 7)) << 4)) = lo;
          *reinterpret_cast<uint4*>(dst + (((q + 1) ^ (r & 7)) << 4)) = hi;
        }
      }
    }
    fence_async_smem();  // generic-proxy writes -> the wgmma reads
    __syncwarp();
    if (lane == 0) arrive(c);
  }
}

}  // namespace helix::cuda::mla_sm90
