#pragma once
// FP8 (e4m3) latent KV in the sm90 MLA decode kernel (mla_decode_sm90.cuh): the widening of a
// tile's raw e4m3 chunks to the bf16 stage layout in shared memory.
//
// Pool row (656 bytes): [c (512 e4m3), k_pe (64 bf16), scale (fp32), pad]; c ~= e4m3 * scale.
// The pool is mapped as bytes [rows, 656]; a 128-byte box column holds 128 e4m3 of c (raw chunk
// c = 0..3) or the 64 bf16 of k_pe. The rope box lands where the bf16 path puts its rope chunk
// (slot 8). The four raw chunks land in slots 0..3 of the stage (its V_L part, freed first) and
// are widened in place to the bf16 layout of the bf16 path (raw chunk c -> bf16 slots 2c, 2c+1;
// e4m3 -> bf16 is exact, up to a power of two: kFp8ScaleBias below), highest chunk first: raw 3 ->
// slots 6, 7 (the V_R part, once free), raw 2
// -> 4, 5, raw 1 -> 2, 3 (raw 2 and 3 already read), raw 0 -> 0, 1 (itself, in place). Each warp
// owns whole rows, so a row's raw bytes are all read (by the warp's lanes, then __syncwarp) before
// any of that row is written, and the in-place step is safe.
// Who widens: tile a of a consumer pair (the first of two tiles of a sequence piece) by the three
// converter warps (row groups kWg0Groups..15) and WG0 (groups 0..kWg0Groups - 1, chunk by chunk
// as its score MMAs reach it), each bf16 slot's full barrier completing when the converter warps
// arrive (WG0 syncs its own warps); tile b by WG1 itself
// (its 4 warps, before it waits for WG0's P_a: the tile it scores next), so tile a + 2's widening
// never queues behind tile b's. The converter warps still arrive on tile b's full barriers
// (after its raw chunks landed), which publishes the scales below.
// The per-token scales go to shared memory ([2 stages][64] fp32, 0 past the end): lanes of
// converter warps 0 and 1 fetch them from the pool rows (one row each) as a tile starts and store
// them (times kFp8ScaleBias) once its raw chunk 3 has landed; the consumers apply them per score
// column (S = scale_t * q.c_t) and fold them into P for the P.V MMAs (O = sum_t (P_t scale_t) c_t;
// the row sums take P unscaled), so the kernel's only roundings are those of the bf16 path (P to
// bf16), not a second one of c.
#include <cuda_fp8.h>

#include "ops/cuda/mla_decode_sm90_ptx.cuh"

namespace helix::cuda::mla_sm90 {

constexpr int kConvWarps = 3;  // producer-warpgroup warps 9..11
// Row groups (4 rows each) of a tile a that WG0 widens itself, chunk by chunk inside its score
// pass; the converter warps widen the rest (bench/RESULTS.md, "FP8 at 128 heads (session 7,
// fp8h)": 1.05-1.15x; WG0 widening 4, 12 or all 16 groups, or the converters also helping WG1
// with tile b, was slower).
constexpr int kWg0Groups = 8;
constexpr int kConvGroups = (16 - kWg0Groups + kConvWarps - 1) / kConvWarps;  // most of one warp
// The widened latent is the e4m3 value times 2^-120 (its bits moved into a bf16, no multiply); the
// latent part of Q in shared memory is multiplied by 2^64 (exact) and the token scales in shared
// memory by 2^56, so the scores come out right and the P.V products stay far from fp32 / bf16
// subnormals (and nothing overflows for any finite scale below 2^70); O then holds the output
// times 2^-64, undone by the final normalisation.
constexpr float kFp8ScaleBias = 0x1p56f;
constexpr float kFp8QBias = 0x1p64f;
constexpr float kFp8OutBias = 0x1p64f;
constexpr int kFp8RowBytes = 656;
constexpr int kFp8ScaleOff = 640;  // bytes: after c (512) and k_pe (128)
// Two e4m3 (bytes b0 = sel & 7, b1 = sel >> 12 of w, as __byte_perm selects them) -> bf16x2 of the
// same values times 2^-120, exactly, in integer ops: an e4m3 byte s.eeee.mmm moved to bf16 bits
// s.0000eeee.mmm0000 is its value times 2^(7 - 127) (e4m3 subnormals land as bf16 subnormals);
// the 2^120 is carried by the biases above (a bf16 multiply here was 1.07-1.14x slower overall).
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t w, uint32_t sel) {
  const uint32_t t = __byte_perm(w, 0u, sel);  // [0, b0, 0, b1]
  return ((t & 0x7f007f00u) >> 4) | (t & 0x80008000u);
}
// 16 e4m3 (one 16-byte piece) -> 16 bf16 (two 16-byte pieces) times 2^-120, exactly.
__device__ __forceinline__ void widen16(const uint4& v, uint4& lo, uint4& hi) {
  lo = make_uint4(e4m3x2_to_bf16x2(v.x, 0x1404u), e4m3x2_to_bf16x2(v.x, 0x3424u),
                  e4m3x2_to_bf16x2(v.y, 0x1404u), e4m3x2_to_bf16x2(v.y, 0x3424u));
  hi = make_uint4(e4m3x2_to_bf16x2(v.z, 0x1404u), e4m3x2_to_bf16x2(v.z, 0x3424u),
                  e4m3x2_to_bf16x2(v.w, 0x1404u), e4m3x2_to_bf16x2(v.w, 0x3424u));
}

// Raw chunk c of one warp's part of a tile in `stage` (raw chunks in slots 0..3): the 4-row groups
// g0, g0 + stride, ... below g_end (at most kGroups of them), widened into bf16 slots 2c, 2c + 1.
// Rows at or past `valid` are written as zeros (they may hold anything). Each warp owns whole
// rows, and the pieces of a batch of kBatch groups are all loaded before any is written: every raw
// byte of a row is read before the in-place step (c == 0) writes it. Ends with the proxy fence
// (the caller syncs its warps or arrives on the chunk's barriers). kBatch: 2 where registers are
// few (the producer warpgroup has 40; 3 there, with WG1 at 4, was 1.02-1.07x slower), 4 for WG1
// (all of its groups at once: 1.00-1.03x).
template <int kGroups, int kBatch = 2>
__device__ __forceinline__ void convert_chunk(uint8_t* stage, int c, int g0, int stride, int g_end,
                                              int lane, int valid) {
  const int p = lane & 7;  // physical piece of a row
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
  fence_async_smem();  // generic-proxy writes -> the wgmma reads
  __syncwarp();
}

// One warp's part of a whole tile (converter warp cw: groups kWg0Groups + cw, stride 3; WG1's
// warp w: w, 4; kGroups at least the warp's group count), raw chunk 3 first, arriving on the bf16
// slots' full barriers as each chunk is done.
template <int kGroups, int kBatch = 2, class WaitRaw, class WaitR, class Arrive>
__device__ __forceinline__ void convert_tile(uint8_t* stage, int g0, int stride, int g_end,
                                             int lane, int valid, WaitRaw&& wait_raw,
                                             WaitR&& wait_r, Arrive&& arrive) {
  for (int c = 3; c >= 0; --c) {
    if (c == 3) wait_r();  // slots 6, 7 are the V_R part
    wait_raw(c);
    convert_chunk<kGroups, kBatch>(stage, c, g0, stride, g_end, lane, valid);
    if (lane == 0) arrive(c);
  }
}

}  // namespace helix::cuda::mla_sm90
