#pragma once
// The bf16 / FP8-KV split MLA decode kernel (see mla_decode_bf16.h for the contract), templated
// on (L, R), the head group HG (16, 32 or 64 heads per CTA) and the cache dtype. Included by one
// mla_decode_bf16_l*_r*.cu file per (L, R).
//
// CTA = (head group, contiguous range of the batch's 32-token tiles); 8 warps, each warp owns
// one m16 tile of heads (mt) and a share (th of TW = 8 / (HG / 16)) of the work on it:
//   1. S partial [16 heads, 32 tokens] over the k-steps th, th + TW, ... of the 576-wide dot
//      product (mma.sync m16n8k16 bf16, fp32 accumulation; Q and KV fragments by ldmatrix),
//      stored to shared memory;
//   2. every warp of the m-tile sums the TW partials for its own fragment positions and runs the
//      online softmax in registers (log2 domain); P goes straight into bf16 A fragments;
//   3. O[16, its L / TW columns] = alpha O + P . V (V = first L columns of the tile, ldmatrix
//      .trans).
// Tiles stream through a cp.async ring (3-4 stages) across sequence boundaries; at a boundary
// the CTA writes the finished sequence (final when the CTA held all of it, else a partial for
// the combine kernel) and loads the next query. FP8: raw rows land in the ring, and each tile is
// dequantised (x scale) into one bf16 tile before phase 1.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_combine_common.cuh"
#include "ops/cuda/mla_decode_bf16_args.h"
#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda::mla_bf16 {

using mla_combine::seq_tokens;
using namespace ptx;  // ptx_common.cuh

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;  // tokens per tile
constexpr int kThreadsPerToken = kThreads / kTile;
// Loader thread mapping. Row-major tiles: 8 threads per token, 128 contiguous bytes per token
// and instruction. Chunk-major tiles: 8 consecutive lanes take 8 consecutive tokens of one chunk
// (distinct shared-memory bank groups), 4 such groups per warp 4 consecutive chunks.
template <bool kChunkMajor>
__device__ __forceinline__ int loader_token(int tid) {
  return kChunkMajor ? (tid & 7) + 8 * (tid >> 6) : tid >> 3;
}
template <bool kChunkMajor>
__device__ __forceinline__ int loader_sub(int tid) {
  return kChunkMajor ? (tid >> 3) & 7 : tid & 7;
}

template <int L, int R, int HG, bool kFp8, bool kWg = false>
struct Cfg {
  static constexpr bool kWgmma = kWg;
  static constexpr bool kIsFp8 = kFp8;
  static constexpr int W = L + R;
  static constexpr int KS = W / 16;       // k-steps of phase 1
  static constexpr int MT = HG / 16;      // m-tiles
  static constexpr int TW = kWarps / MT;  // warps per m-tile
  static constexpr int KSW = (KS + TW - 1) / TW;
  static constexpr int NP = L / 16;  // phase-3 n-tile pairs
  static constexpr int NPW = (NP + TW - 1) / TW;
  // bf16 tiles in shared memory are chunk-major: the 16-byte chunk j (8 elements) of row r is at
  // 16 (j * rows + r). Eight rows of one chunk are one contiguous 128-byte core matrix, which is
  // what wgmma's no-swizzle descriptors read, and 8 lanes of an ldmatrix hit 8 distinct 16-byte
  // bank groups.
  static constexpr int kRawBytes = kFp8 ? ((L + 2 * R + 4 + 15) / 16) * 16 : 2 * W;
  static constexpr int kRawChunks = kRawBytes / 16;
  static constexpr int kStages = kFp8 ? 4 : (HG == 64 ? 3 : 4);
  static constexpr int kSStride = kTile + 8;  // floats, conflict-free float2 fragment access
  // shared memory carve-up, in bytes
  // Byte offset of (row, chunk) = row * kRowStep + chunk * kChunkStep{Q,T}: chunk-major for the
  // wgmma kernel (its descriptors read 128-byte core matrices), else row-major with rows padded
  // to an odd number of 16-byte units (conflict-free ldmatrix, and 128-byte global runs).
  static constexpr bool kChunkMajor = kWg;
  static constexpr int kRowBytes = kChunkMajor ? 2 * W : 2 * (W + 8);
  static constexpr int kRowStep = kChunkMajor ? 16 : kRowBytes;
  static constexpr int kChunkStepQ = kChunkMajor ? 16 * HG : 16;
  static constexpr int kChunkStepT = kChunkMajor ? 16 * kTile : 16;
  static constexpr int kQBytes = HG * kRowBytes;
  static constexpr int kTileBytes = kTile * kRowBytes;
  static constexpr int kRawStageBytes = kTile * kRawBytes;
  static constexpr int kRingBytes = kFp8 ? kStages * kRawStageBytes : kStages * kTileBytes;
  static constexpr int kConvBytes = kFp8 ? kTileBytes : 0;
  static constexpr int kSPartBytes = TW * HG * kSStride * 4;
  static constexpr int kFixedBytes = kQBytes + kRingBytes + kConvBytes + kSPartBytes;
  static size_t smem_bytes(int max_batch) {
    return kFixedBytes + sizeof(int) * (static_cast<size_t>(max_batch) + 1);
  }
  static_assert(W % 16 == 0 && L % 16 == 0, "k-steps of 16, n-tile pairs of 16");
  static_assert(!kWg || (HG == 64 && L == 512), "wgmma path: 64 heads, two halves of 256 columns");
  static_assert(kChunkMajor || (kRowBytes / 16) % 2 == 1, "odd 16 B row stride");
  static_assert(MT * TW == kWarps, "head group of 16, 32 or 64");
};

// c += a . b, m16n8k16, bf16 operands, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  mma_bf16_m16n8k16_ordered(c, a[0], a[1], a[2], a[3], b0, b1);
}
// ---- wgmma (sm_90a) ----
// Shared-memory matrix descriptor, no swizzle: start, LBO (between core matrices along K) and
// SBO (along M/N), all in bytes.
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3ffffu) >> 4) |
         (static_cast<uint64_t>((lbo & 0x3ffffu) >> 4) << 16) |
         (static_cast<uint64_t>((sbo & 0x3ffffu) >> 4) << 32);
}
#include "ops/cuda/mla_decode_bf16_wgmma.inc"

// Per-thread tile loader: thread tid copies token tid / 8 of a tile, chunks tid % 8 + 8 j. The
// token's pool row is looked up one tile ahead (fetch), so the block-table read never stalls the
// copy (issue).
template <class C>
struct Loader {
  const Args* a;
  const int* s_cum;
  int b = 0, k = 0;  // tile cursor: sequence, tile within it
  int64_t row = -1;  // pool row of this thread's token in the cursor's tile, -1: past the end
  __device__ void lookup() {
    if (b >= a->batch) {
      row = -1;
      return;
    }
    const int pos = k * kTile + loader_token<C::kChunkMajor>(threadIdx.x);
    const int len = seq_tokens(*a, b);
    if (pos >= len) {
      row = -1;
      return;
    }
    const int blk =
        a->block_table[static_cast<int64_t>(b) * a->max_blocks_per_seq + pos / a->block_size];
    row = static_cast<int64_t>(blk) * a->block_size + pos % a->block_size;
  }
  __device__ void advance() {
    ++k;
    while (b < a->batch && k >= s_cum[b + 1] - s_cum[b]) {
      ++b;
      k = 0;
    }
  }
  __device__ void issue(uint32_t dst_stage) const {
    const int tok = loader_token<C::kChunkMajor>(threadIdx.x);
    const int sub = loader_sub<C::kChunkMajor>(threadIdx.x);
    const uint8_t* src = a->kv_pool + (row < 0 ? 0 : row) * C::kRawBytes;
    if constexpr (C::kIsFp8) {  // raw rows, row-major
      const uint32_t dst = dst_stage + tok * C::kRawBytes;
#pragma unroll
      for (int j = sub; j < C::kRawChunks; j += kThreadsPerToken)
        cp_async16(dst + 16 * j, src + 16 * j, row >= 0 ? 16u : 0u);
    } else {
      const uint32_t dst = dst_stage + tok * C::kRowStep;
#pragma unroll
      for (int j = sub; j < C::kRawChunks; j += kThreadsPerToken)
        cp_async16(dst + C::kChunkStepT * j, src + 16 * j, row >= 0 ? 16u : 0u);
    }
  }
};

// FP8 raw tile -> bf16 tile: c = e4m3 * scale, k_pe copied.
template <class C, int L, int R>
__device__ __forceinline__ void dequant_tile(const uint8_t* raw, uint8_t* dst) {
  constexpr int kCChunks = L / 16;      // 16 e4m3 per chunk
  constexpr int kRChunks = 2 * R / 16;  // 8 bf16 per chunk
  constexpr int kPerTok = kCChunks + kRChunks;
  for (int i = threadIdx.x; i < kTile * kPerTok; i += kThreads) {
    const int tok = i % kTile, j = i / kTile;  // consecutive threads: consecutive tokens
    const uint8_t* src = raw + tok * C::kRawBytes;
    uint8_t* out = dst + tok * C::kRowStep;
    if (j < kCChunks) {
      const float s = *reinterpret_cast<const float*>(src + L + 2 * R);
      const uint4 v = *reinterpret_cast<const uint4*>(src + 16 * j);
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
      uint32_t o[8];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const __half2_raw h0 = __nv_cvt_fp8x2_to_halfraw2(
            static_cast<__nv_fp8x2_storage_t>(w[e] & 0xffffu), __NV_E4M3);
        const __half2_raw h1 =
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w[e] >> 16), __NV_E4M3);
        const float2 f0 = __half22float2(*reinterpret_cast<const __half2*>(&h0));
        const float2 f1 = __half22float2(*reinterpret_cast<const __half2*>(&h1));
        o[2 * e] = pack_bf16(f0.x * s, f0.y * s);
        o[2 * e + 1] = pack_bf16(f1.x * s, f1.y * s);
      }
      *reinterpret_cast<uint4*>(out + C::kChunkStepT * (2 * j)) =
          make_uint4(o[0], o[1], o[2], o[3]);
      *reinterpret_cast<uint4*>(out + C::kChunkStepT * (2 * j + 1)) =
          make_uint4(o[4], o[5], o[6], o[7]);
    } else {
      const int r = j - kCChunks;
      *reinterpret_cast<uint4*>(out + C::kChunkStepT * (L / 8 + r)) =
          *reinterpret_cast<const uint4*>(src + L + 16 * r);
    }
  }
}

template <int L, int R, int HG, bool kFp8, bool kWg>
__global__ void __launch_bounds__(kThreads, 1) mla_split_kernel(const Args a) {
  using C = Cfg<L, R, HG, kFp8, kWg>;
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* s_q = smem;
  uint8_t* s_ring = s_q + C::kQBytes;
  uint8_t* s_conv = s_ring + C::kRingBytes;  // fp8 only
  float* s_part = reinterpret_cast<float*>(s_conv + C::kConvBytes);
  int* s_cum = reinterpret_cast<int*>(reinterpret_cast<uint8_t*>(s_part) + C::kSPartBytes);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  // m-tile and share; warps 4..7 are the second warpgroup (wgmma: rows 16 (warp % 4)).
  const int mt = warp % C::MT, th = warp / C::MT;
  const int cta = blockIdx.x, group = blockIdx.y;

  if (warp == 0) mla_combine::tile_prefix_sums<kTile>(a, s_cum, nullptr, lane);
  __syncthreads();
  mla_combine::TileRange tr;
  if (!mla_combine::cta_tile_range(a, s_cum, cta, tr)) return;
  const int t_begin = tr.t_begin, t_end = tr.t_end, n_tiles = t_end - t_begin;
  int cb = tr.cb, ck = tr.ck;  // cursor of the first tile

  Loader<C> ld{&a, s_cum, cb, ck};
  ld.lookup();
  const uint32_t ring = smem_u32(s_ring);
  constexpr int kStageBytes = kFp8 ? C::kRawStageBytes : C::kTileBytes;
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < n_tiles) ld.issue(ring + s * kStageBytes);
    cp_async_commit();
    ld.advance();
    ld.lookup();
  }

  float m_run[2], d_run[2];
  float acc[C::NPW][2][4];
  int len = 0;
  const int h_base = group * HG + mt * 16;

  for (int j = 0; j < n_tiles; ++j) {
    cp_async_wait<C::kStages - 2>();
    __syncthreads();  // tile j landed for all; stage (j - 1) and s_part, s_q free
    const uint8_t* kv_tile;
    if constexpr (kFp8) {
      dequant_tile<C, L, R>(s_ring + (j % C::kStages) * kStageBytes, s_conv);
      kv_tile = s_conv;
    } else {
      kv_tile = s_ring + (j % C::kStages) * kStageBytes;
    }
    {
      const int jn = j + C::kStages - 1;
      if (jn < n_tiles) ld.issue(ring + (jn % C::kStages) * kStageBytes);
      cp_async_commit();
      ld.advance();
      ld.lookup();
    }
    const bool seg_start = (j == 0) || ck == 0;
    if (seg_start) {
      // New sequence: its query into shared memory (rows past H zero), fresh softmax state.
      len = seq_tokens(a, cb);
      constexpr int kQChunks = C::W / 8;
      for (int i = tid; i < HG * kQChunks; i += kThreads) {
        const int r = i % HG, c = i / HG;  // consecutive threads: consecutive rows
        const int h = group * HG + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (h < a.num_heads)
          v = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.q) +
                                              (static_cast<int64_t>(cb) * a.num_heads + h) * C::W +
                                              8 * c);
        *reinterpret_cast<uint4*>(s_q + r * C::kRowStep + c * C::kChunkStepQ) = v;
      }
      m_run[0] = m_run[1] = -INFINITY;
      d_run[0] = d_run[1] = 0.f;
#pragma unroll
      for (int p = 0; p < C::NPW; ++p)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[p][h][e] = 0.f;
    }
    if (kFp8 || seg_start || kWg) {
      // wgmma reads shared memory through the async proxy: order the generic writes (cp.async,
      // dequant, query) before it.
      if constexpr (kWg) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();
    }

    // 1. partial scores over this warp's k-steps
    {
      float s[kTile / 8][4];
#pragma unroll
      for (int n = 0; n < kTile / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = 0.f;
      if constexpr (kWg) {
        // Warpgroup th: k-steps [th KS/2, (th + 1) KS/2), S[64, 32] += Q[64, 16] K[32, 16]^T.
        constexpr int kHalf = C::KS / 2;
        // Descriptors advance by adding the start-address step (in 16-byte units) to the low
        // field; one pair live at a time.
        uint64_t dq = make_desc(smem_u32(s_q) + th * kHalf * 2 * 16 * HG, 16 * HG, 128);
        uint64_t dk = make_desc(smem_u32(kv_tile) + th * kHalf * 2 * 16 * kTile, 16 * kTile, 128);
        wg_fence();
#pragma unroll 1
        for (int i = 0; i < kHalf; ++i) {
          wgmma_m64n32k16_ss(s, dq, dk);
          dq += 2 * HG;
          dk += 2 * kTile;
        }
        wg_commit();
        wg_wait<0>();
      } else {
        const uint32_t q_addr = smem_u32(s_q) + (lane >> 4) * C::kChunkStepQ +
                                (mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::kRowStep;
        const uint32_t k_addr = smem_u32(kv_tile) + ((lane >> 3) & 1) * C::kChunkStepT +
                                ((lane >> 4) * 8 + (lane & 7)) * C::kRowStep;
#pragma unroll
        for (int i = 0; i < C::KSW; ++i) {
          const int ks = th + i * C::TW;
          if (C::KS % C::TW != 0 && ks >= C::KS) break;
          uint32_t qa[4];
          ldsm_x4(qa, q_addr + ks * 2 * C::kChunkStepQ);
#pragma unroll
          for (int np = 0; np < kTile / 16; ++np) {
            uint32_t kb[4];
            ldsm_x4(kb, k_addr + ks * 2 * C::kChunkStepT + np * 16 * C::kRowStep);
            mma_bf16(s[2 * np], qa, kb[0], kb[1]);
            mma_bf16(s[2 * np + 1], qa, kb[2], kb[3]);
          }
        }
      }
      float* part = s_part + (th * HG + mt * 16) * C::kSStride;
#pragma unroll
      for (int n = 0; n < kTile / 8; ++n) {
        *reinterpret_cast<float2*>(part + g * C::kSStride + 8 * n + 2 * t) =
            make_float2(s[n][0], s[n][1]);
        *reinterpret_cast<float2*>(part + (g + 8) * C::kSStride + 8 * n + 2 * t) =
            make_float2(s[n][2], s[n][3]);
      }
    }
    __syncthreads();
    // Many k-partials (TW >= 4): sum them once, cooperatively, into partial 0.
    constexpr int kParts = C::TW >= 4 ? 1 : C::TW;
    if constexpr (C::TW >= 4) {
      for (int i = tid; i < HG * kTile / 2; i += kThreads) {
        float* e = s_part + (i / (kTile / 2)) * C::kSStride + 2 * (i % (kTile / 2));
        float2 v = *reinterpret_cast<const float2*>(e);
#pragma unroll
        for (int w = 1; w < C::TW; ++w) {
          const float2 u = *reinterpret_cast<const float2*>(e + w * HG * C::kSStride);
          v.x += u.x;
          v.y += u.y;
        }
        *reinterpret_cast<float2*>(e) = v;
      }
      __syncthreads();
    }

    // 2. online softmax in registers, for fragment positions (row g / g + 8, token 16 kk + 2t
    // (+1) and + 8 (+1))
    uint32_t pa[kTile / 16][4];
    {
      float x[kTile / 16][2][4];
      const float* part = s_part + mt * 16 * C::kSStride;
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float2 lo = make_float2(0.f, 0.f), hi = make_float2(0.f, 0.f);
#pragma unroll
          for (int w = 0; w < kParts; ++w) {
            const float* row = part + (w * HG + g + 8 * r) * C::kSStride + 16 * kk + 2 * t;
            const float2 u = *reinterpret_cast<const float2*>(row);
            const float2 v = *reinterpret_cast<const float2*>(row + 8);
            lo.x += u.x;
            lo.y += u.y;
            hi.x += v.x;
            hi.y += v.y;
          }
          x[kk][r][0] = lo.x;
          x[kk][r][1] = lo.y;
          x[kk][r][2] = hi.x;
          x[kk][r][3] = hi.y;
        }
      const int pos0 = ck * kTile + 2 * t;
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int pos = pos0 + 16 * kk + (e & 1) + 8 * (e >> 1);
            const float v = tail_score(pos, len, x[kk][r][e], a.scale_log2);
            x[kk][r][e] = v;
            mx[r] = fmaxf(mx[r], v);
          }
      float alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m_run[r], mx[r]);  // finite: a tile has a valid token
        alpha[r] = exp2f(m_run[r] - m_new);          // 0 when m_run is -inf
        m_run[r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int kk = 0; kk < kTile / 16; ++kk)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float p = exp2f(x[kk][r][e] - m_new);
            x[kk][r][e] = p;
            sum += p;
          }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        d_run[r] = d_run[r] * alpha[r] + sum;
      }
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        pa[kk][0] = pack_bf16(x[kk][0][0], x[kk][0][1]);
        pa[kk][1] = pack_bf16(x[kk][1][0], x[kk][1][1]);
        pa[kk][2] = pack_bf16(x[kk][0][2], x[kk][0][3]);
        pa[kk][3] = pack_bf16(x[kk][1][2], x[kk][1][3]);
      }
#pragma unroll
      for (int p = 0; p < C::NPW; ++p)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          acc[p][h][0] *= alpha[0];
          acc[p][h][1] *= alpha[0];
          acc[p][h][2] *= alpha[1];
          acc[p][h][3] *= alpha[1];
        }
    }

    // 3. O += P . V over this warp's column pairs (pairs th NPW .. th NPW + NPW - 1)
    if constexpr (kWg) {
      // Warpgroup th: O[64, 256 columns of half th] += P[64, 16] V[16, 256], P from registers.
      const uint32_t v0 = smem_u32(kv_tile) + th * (L / 16) * 16 * kTile;
      wg_fence();
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk)
        wgmma_m64n256k16_rs(acc, pa[kk], make_desc(v0 + kk * 2 * 128, 128, 16 * kTile));
      wg_commit();
      // bf16: left in flight over the next tile's barrier and score MMAs (the ring stage it
      // reads is not refilled before phase 1 waits); FP8 rewrites its tile first, so wait.
      if constexpr (kFp8) wg_wait<0>();
    } else {
      const uint32_t v_addr = smem_u32(kv_tile) + (lane >> 4) * C::kChunkStepT +
                              ((lane & 7) + ((lane >> 3) & 1) * 8) * C::kRowStep;
#pragma unroll
      for (int p = 0; p < C::NPW; ++p) {
        const int pair = th * C::NPW + p;
        if (C::NP % C::TW != 0 && pair >= C::NP) break;
#pragma unroll
        for (int kk = 0; kk < kTile / 16; ++kk) {
          uint32_t vb[4];
          ldsm_x4_t(vb, v_addr + pair * 2 * C::kChunkStepT + kk * 16 * C::kRowStep);
          mma_bf16(acc[p][0], pa[kk], vb[0], vb[1]);
          mma_bf16(acc[p][1], pa[kk], vb[2], vb[3]);
        }
      }
    }

    // End of the sequence's tiles in this CTA: final output, or a partial for the combine.
    const int seq_tiles = s_cum[cb + 1] - s_cum[cb];
    if (ck == seq_tiles - 1 || j == n_tiles - 1) {
      if constexpr (kWg) wg_wait<0>();
      const bool complete = s_cum[cb] >= t_begin && s_cum[cb + 1] <= t_end;
      const int64_t prow = mla_combine::partial_row(
          a, group, cta, mla_combine::partial_slot(s_cum, cb, t_begin), HG);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int hl = mt * 16 + g + 8 * r;
        const int h = h_base + g + 8 * r;
        if (h >= a.num_heads) continue;
        const float inv = 1.f / d_run[r];
        const float lse = mla_combine::lse_from_log2(m_run[r], d_run[r]);
        const int64_t orow = static_cast<int64_t>(cb) * a.num_heads + h;
        if (th == 0 && t == 0) {
          if (complete)
            a.lse[orow] = lse;
          else
            a.part_lse[prow + hl] = lse;
        }
#pragma unroll
        for (int p = 0; p < C::NPW; ++p) {
          const int pair = th * C::NPW + p;
          if (C::NP % C::TW != 0 && pair >= C::NP) break;
#pragma unroll
          for (int hh = 0; hh < 2; ++hh) {
            const int col = pair * 16 + hh * 8 + 2 * t;
            const float v0 = acc[p][hh][2 * r] * inv, v1 = acc[p][hh][2 * r + 1] * inv;
            if (!complete) {
              *reinterpret_cast<float2*>(a.part_out + (prow + hl) * L + col) = make_float2(v0, v1);
            } else if (a.out_bf16) {
              *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(a.out) + orow * L +
                                                 col) = __floats2bfloat162_rn(v0, v1);
            } else {
              *reinterpret_cast<float2*>(static_cast<float*>(a.out) + orow * L + col) =
                  make_float2(v0, v1);
            }
          }
        }
      }
    }
    // Cursor of tile j + 1.
    if (++ck >= seq_tiles) {
      ck = 0;
      ++cb;
      while (cb < a.batch && s_cum[cb + 1] == s_cum[cb]) ++cb;
    }
  }
  cp_async_wait<0>();
}

// Merges the partials of sequences that span several CTAs, and writes the empty sequences.
// Grid (B, H), kCombineThreads threads, dynamic shared memory 8 bytes per CTA of a group.
constexpr int kCombineThreads = 128;

template <int L, int HG>
__global__ void __launch_bounds__(kCombineThreads) mla_combine_kernel(const Args a) {
  mla_combine::combine_partials<kCombineThreads, L, HG, kTile, 0, false>(a);
}

}  // namespace helix::cuda::mla_bf16

namespace helix::cuda::mla_bf16 {

// Host entry points of one (L, R) (declared in mla_decode_bf16_args.h).
template <int L, int R>
struct Entry {
  template <int HG, bool kFp8, bool kWg = false, class F>
  static cudaError_t with(F&& f) {
    return f(mla_split_kernel<L, R, HG, kFp8, kWg>, Cfg<L, R, HG, kFp8, kWg>::smem_bytes(0));
  }
  // hg 64 + wg: the wgmma kernel (L = 512 only).
  template <class F>
  static cudaError_t dispatch(int hg, bool fp8, bool wg, F&& f) {
    if (hg == 16) return fp8 ? with<16, true>(f) : with<16, false>(f);
    if (hg == 32) return fp8 ? with<32, true>(f) : with<32, false>(f);
    if (hg == 64) {
      if constexpr (L == 512) {
        if (wg) return fp8 ? with<64, true, true>(f) : with<64, false, true>(f);
      }
      return fp8 ? with<64, true>(f) : with<64, false>(f);
    }
    return cudaErrorInvalidValue;
  }
};

template <int L, int R>
cudaError_t prepare(int hg, bool fp8, bool wg, int max_batch, size_t* smem, int* ctas_per_sm) {
  return Entry<L, R>::dispatch(hg, fp8, wg, [&](auto kernel, size_t fixed) {
    *smem = fixed + sizeof(int) * (static_cast<size_t>(max_batch) + 1);
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(*smem));
    if (err != cudaSuccess) return err;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(ctas_per_sm, kernel, kThreads, *smem);
  });
}

template <int L, int R>
cudaError_t launch(const Args& a, int hg, bool fp8, bool wg, dim3 grid, size_t smem,
                   cudaStream_t stream) {
  cudaError_t err = Entry<L, R>::dispatch(hg, fp8, wg, [&](auto kernel, size_t) {
    kernel<<<grid, kThreads, smem, stream>>>(a);
    return cudaGetLastError();
  });
  if (err != cudaSuccess) return err;
  const dim3 cgrid(a.batch, a.num_heads);
  const size_t csmem = 8 * static_cast<size_t>(a.ctas_per_group);
  if (hg == 16)
    mla_combine_kernel<L, 16><<<cgrid, kCombineThreads, csmem, stream>>>(a);
  else if (hg == 32)
    mla_combine_kernel<L, 32><<<cgrid, kCombineThreads, csmem, stream>>>(a);
  else
    mla_combine_kernel<L, 64><<<cgrid, kCombineThreads, csmem, stream>>>(a);
  return cudaGetLastError();
}

#define HELIX_INSTANTIATE_MLA_BF16(L, R)                                   \
  template cudaError_t prepare<L, R>(int, bool, bool, int, size_t*, int*); \
  template cudaError_t launch<L, R>(const Args&, int, bool, bool, dim3, size_t, cudaStream_t);

}  // namespace helix::cuda::mla_bf16
