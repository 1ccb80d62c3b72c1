#pragma once
// FP8 (e4m3) latent KV in the sm90 MLA decode kernel (mla_decode_sm90.cuh): the widening of a
// tile's raw e4m3 chunks to the bf16 stage layout in shared memory.
//
// Pool row (656 bytes): [c (512 e4m3), k_pe (64 bf16), scale (fp32), pad]; c ~= e4m3 * scale.
// The pool is mapped as bytes [rows, 656]; a 128-byte box column holds 128 e4m3 of c (raw chunk
// c = 0..3) or the 64 bf16 of k_pe. The rope box lands where the bf16 path puts its rope chunk
// (slot 8). The four raw chunks land in slots 0..3 of the stage (its V_L part, freed first) and
// are widened in place to the bf16 layout of the bf16 path (raw chunk c -> bf16 slots 2c, 2c+1;
// e4m3 -> bf16 is exact), highest chunk first: raw 3 -> slots 6, 7 (the V_R part, once free), raw 2
// -> 4, 5, raw 1 -> 2, 3 (raw 2 and 3 already read), raw 0 -> 0, 1 (itself, in place). Each warp
// owns whole rows, so a row's raw bytes are all read (by the warp's lanes, then __syncwarp) before
// any of that row is written, and the in-place step is safe.
// Who widens: tile a of a consumer pair (the first of two tiles of a sequence piece) by the three
// converter warps, each bf16 slot's full barrier completing when they arrive; tile b by WG1 itself
// (its 4 warps, before it waits for WG0's P_a: the tile it scores next), so tile a + 2's widening
// never queues behind tile b's. The converter warps still arrive on tile b's full barriers
// (after its raw chunks landed), which publishes the scales below.
// The per-token scales go to shared memory ([2 stages][64] fp32, 0 past the end): lanes of
// converter warps 0 and 1 fetch them from the pool rows (one row each) as a tile starts and store
// them once its raw chunk 3 has landed; the consumers apply them per score column
// (S = scale_t * q.c_t) and fold them into P for the P.V MMAs (O = sum_t (P_t scale_t) c_t; the row
// sums take P unscaled), so the kernel's only roundings are those of the bf16 path (P to bf16), not
// a second one of c.
#include <cuda_fp8.h>

#include "ops/cuda/mla_decode_sm90_ptx.cuh"

namespace helix::cuda::mla_sm90 {

constexpr int kConvWarps = 3;  // producer-warpgroup warps 9..11
// Measuring knobs (fp8h, session 7; removed once measured).
#ifndef FP8H_SHARE
#define FP8H_SHARE 0  // WG0 widens row groups 0..7 of tile a per chunk, the converter warps 8..15
#endif
#ifndef FP8H_NOWIDEN
#define FP8H_NOWIDEN 0  // diagnostic only (wrong results): no widening, only the waits and arrivals
#endif
#ifndef FP8H_WG1_MODE3
#define FP8H_WG1_MODE3 0  // fp8r's WG1 mode 3 (s6-fp8r ccfe2ed)
#endif
#ifndef FP8H_RAW_FIRST
#define FP8H_RAW_FIRST 0  // the producer issues the raw chunks before the rope chunk
#endif
#ifndef FP8H_SHARE_G
#define FP8H_SHARE_G 8  // kShare: tile a's row groups WG0 widens (a multiple of 4)
#endif
#ifndef FP8H_SHARE_BG
#define FP8H_SHARE_BG 16  // tile b's row groups WG1 widens (the converter warps the rest)
#endif
#ifndef FP8H_NOMUL
#define FP8H_NOMUL 0  // the widening leaves out its x 2^120; the token scales carry it
#endif
constexpr bool kShare = FP8H_SHARE;
// Row groups of tile a the converter warps widen from (the ones below are WG0's when kShare).
constexpr int kConvG0 = kShare ? FP8H_SHARE_G : 0;
constexpr int kConvG0B = FP8H_SHARE_BG;  // the same for tile b (16: WG1 widens all of it)
constexpr int kConvGroups =  // most of one converter warp
    ((16 - (kConvG0 < kConvG0B ? kConvG0 : kConvG0B)) + kConvWarps - 1) / kConvWarps;

// FP8H_NOMUL: the widened latent is the e4m3 value times 2^-120 (no multiply), the latent part of Q
// in shared memory is multiplied by 2^64 (exact), the token scales in shared memory by 2^56, so the
// scores come out right and the P.V products stay far from fp32 / bf16 subnormals; O then holds
// the output times 2^-64, undone by the final normalisation.
constexpr float kFp8ScaleBias = FP8H_NOMUL ? 0x1p56f : 1.f;
constexpr float kFp8QBias = 0x1p64f;
constexpr float kFp8OutBias = FP8H_NOMUL ? 0x1p64f : 1.f;
constexpr int kFp8RowBytes = 656;
constexpr int kFp8ScaleOff = 640;  // bytes: after c (512) and k_pe (128)
// Two e4m3 (bytes b0 = sel & 7, b1 = sel >> 12 of w, as __byte_perm selects them) -> bf16x2,
// exactly, in integer ops and one bf16 multiply: an e4m3 byte s.eeee.mmm moved to bf16 bits
// s.0000eeee.mmm0000 is the same value times 2^(7 - 127) (for e4m3 subnormals too: they land as
// bf16 subnormals, which the bf16 multiply takes exactly); times 2^120 undoes the bias. Five
// instructions per pair against cvt e4m3x2 -> f16x2, two f16 -> f32 and a bf16x2 pack (on the
// slower conversion pipe); on its own no faster at the measured shapes (bench/RESULTS.md,
// "FP8 at 128 heads (session 6, fp8h)"), kept as the widening the measured kernel runs.
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t w, uint32_t sel) {
  const uint32_t t = __byte_perm(w, 0u, sel);  // [0, b0, 0, b1]
  const uint32_t b = ((t & 0x7f007f00u) >> 4) | (t & 0x80008000u);
  if (FP8H_NOMUL) return b;
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

// Raw chunk c of one warp's part of a tile in `stage` (raw chunks in slots 0..3): the 4-row groups
// g0, g0 + stride, ... below g_end (at most kGroups of them), widened into bf16 slots 2c, 2c + 1.
// Rows at or past `valid` are written as zeros (they may hold anything). Each warp owns whole
// rows, and the pieces of a batch of groups are all loaded before any is written: every raw byte
// of a row is read before the in-place step (c == 0) writes it. Ends with the proxy fence (the
// caller syncs its warps or arrives on the chunk's barriers).
template <int kGroups>
__device__ __forceinline__ void convert_chunk(uint8_t* stage, int c, int g0, int stride, int g_end,
                                              int lane, int valid) {
  // Groups loaded before any is written (the producer warpgroup has 40 registers: more spills).
  constexpr int kBatch = 2;
  const int p = lane & 7;  // physical piece of a row
  if constexpr (!FP8H_NOWIDEN) {
#pragma unroll
    for (int k0 = 0; k0 < kGroups; k0 += kBatch) {
      uint4 v[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int g = g0 + stride * (k0 + k), r = 4 * g + (lane >> 3);  // group, row
        if (k0 + k < kGroups && g < g_end)
          v[k] = *reinterpret_cast<const uint4*>(stage + c * kChunkBytes + r * 128 + p * 16);
      }
      __syncwarp();  // these rows' raw pieces are all read before any is written (c == 0)
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int g = g0 + stride * (k0 + k), r = 4 * g + (lane >> 3);
        if (k0 + k < kGroups && g < g_end) {
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
  }
  fence_async_smem();  // generic-proxy writes -> the wgmma reads
  __syncwarp();
}

// One warp's part of a whole tile (converter warp cw: groups kConvG0 + cw, stride 3; WG1's warp
// w: w, 4; kGroups at least the warp's group count), raw chunk 3 first, arriving on the bf16 slots' full barriers as each chunk is done.
template <int kGroups, class WaitRaw, class WaitR, class Arrive>
__device__ __forceinline__ void convert_tile(uint8_t* stage, int g0, int stride, int g_end,
                                             int lane, int valid, WaitRaw&& wait_raw,
                                             WaitR&& wait_r, Arrive&& arrive) {
  for (int c = 3; c >= 0; --c) {
    if (c == 3) wait_r();  // slots 6, 7 are the V_R part
    wait_raw(c);
    convert_chunk<kGroups>(stage, c, g0, stride, g_end, lane, valid);
    if (lane == 0) arrive(c);
  }
}

}  // namespace helix::cuda::mla_sm90
