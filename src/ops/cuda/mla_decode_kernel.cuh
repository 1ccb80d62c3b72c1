#pragma once
// The split-KV absorbed-MLA decode kernel, templated on the latent width L, the rope width R and
// the head group size HG. Included by one mla_decode_*.cu file per instantiation (so nvcc
// compiles them in parallel) and declared, not defined, for the dispatcher in mla_decode.cu.
//
// One CTA = (head group, KV chunk, sequence). The latent row [c, k_pe] (W = L + R floats) is
// shared by every head, so the CTA streams its chunk through shared memory in tiles of 32 tokens
// (double-buffered with cp.async) and uses each tile for all HG heads:
//   1. scores S[HG, 32] = Q[HG, W] . KV[32, W]^T, register-tiled (2x4 per thread, K split over 4
//      warps, partial sums reduced in shared memory);
//   2. online softmax per head (one warp per head, lane = token): running max m and sum d, in
//      the log2 domain;
//   3. O[HG, L] = alpha * O + P[HG, 32] . KV[32, L], register-tiled (8 heads x 4 dims per thread).
// Each CTA writes a partial (out, lse) normalised over its chunk; attn_combine_cuda merges the
// chunks (or the CTA writes the final result when there is one chunk).
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/mla_decode_args.h"
#include "ops/cuda/ptx_common.cuh"

namespace helix::cuda {

namespace mla {

constexpr int kTile = 32;      // tokens per shared-memory tile (= warp size, one lane per token)
constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kKSplit = 4;  // phase 1: K is split over 4 warps; 2 warps of 16 tokens each

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  // 0 source bytes: zero-fill without reading
  ptx::cp_async16(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem, valid ? 16u : 0u);
}
using ptx::cp_async_commit;
using ptx::cp_async_wait;

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// End of the online softmax for the N heads a warp owns (heads warp + kWarps * i): lane 0 puts
// 1/d into s_inv (0 for an empty chunk) and, for the heads that exist (< valid), the natural-log
// lse into lse_out (-inf for an empty chunk). m and d are in the log2 domain.
template <int N>
__device__ __forceinline__ void store_softmax_totals(const float (&m)[N], const float (&d)[N],
                                                     float* s_inv, float* lse_out, int valid,
                                                     int warp, int lane) {
  if (lane != 0) return;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int h = warp + kWarps * i;
    s_inv[h] = d[i] > 0.f ? 1.f / d[i] : 0.f;
    if (h < valid) lse_out[h] = d[i] > 0.f ? (m[i] + log2f(d[i])) * 0.6931471805599453f : -INFINITY;
  }
}

// Paged KV tile loader shared by the FMA and MMA kernels. Warp w copies tokens w + kWarps*j
// (j < kTile / kWarps) of a tile; lane j holds that token's block id and offset, fetched one tile
// ahead (fetch) so that the block-table read never stalls the copy (issue). C gives the shared
// layout: kStride floats per row, kKvFloats per buffer, W4 float4s per row.
template <class C>
struct KvTileLoader {
  const float* kv_pool;  // [num_physical_blocks, block_size, W]
  const int32_t* table;  // [max_blocks_per_seq] of this sequence
  int block_size, row_width, chunk_begin, chunk_end, num_tiles, warp, lane;
  int blk_next = -1, off_next = 0;

  __device__ __forceinline__ void fetch(int tile) {
    blk_next = -1;
    off_next = 0;
    if (lane < kTile / kWarps) {
      const int pos = chunk_begin + tile * kTile + warp + kWarps * lane;
      if (tile < num_tiles && pos < chunk_end) {
        blk_next = table[pos / block_size];
        off_next = pos % block_size;
      }
    }
  }
  __device__ __forceinline__ void issue(float* s_kv, int buf, int blk, int off) const {
    float* dst = s_kv + buf * C::kKvFloats;
#pragma unroll
    for (int j = 0; j < kTile / kWarps; ++j) {
      const int bj = __shfl_sync(0xffffffffu, blk, j);
      const int oj = __shfl_sync(0xffffffffu, off, j);
      const int tok = warp + kWarps * j;
      const float* src =
          bj >= 0 ? kv_pool + (static_cast<int64_t>(bj) * block_size + oj) * row_width : kv_pool;
#pragma unroll
      for (int c = lane; c < C::W4; c += 32)
        cp_async16(dst + tok * C::kStride + 4 * c, src + 4 * c, bj >= 0);
    }
  }
};

template <int L, int R, int HG>
struct Config {
  static constexpr int W = L + R;
  static constexpr int W4 = W / 4;  // float4 columns of a latent row
  static constexpr int L4 = L / 4;
  static constexpr int kStride = W + 4;  // padded smem row: consecutive rows hit distinct banks
  static constexpr int kPStride = HG + 4;
  // phase 1: lane = (head block 0..7, token block 0..3); heads hb + 8i, tokens tb + 4j
  static constexpr int kTH1 = HG / 8;
  static constexpr int kKChunk = (W4 + kKSplit - 1) / kKSplit;
  // phase 2: 8 heads per thread, HG/8 head blocks over the threads, the rest over dims
  static constexpr int kHB2 = HG / 8;
  static constexpr int kNDT = kThreads / kHB2;
  static constexpr int kCPT = (L4 + kNDT - 1) / kNDT;  // float4 columns per thread
  // shared memory, in floats
  static constexpr int kKvFloats = kTile * kStride;
  static constexpr int kSmemFloats =
      2 * kKvFloats + HG * kStride + kKSplit * HG * kTile + kTile * kPStride + HG;
  static constexpr size_t kSmemBytes = sizeof(float) * kSmemFloats;

  static_assert(W % 4 == 0 && L % 4 == 0, "rows are moved as float4");
  static_assert(HG % 8 == 0 && HG >= 8, "head group is a multiple of 8");
  static_assert(kThreads % kHB2 == 0, "phase-2 thread split");
  static_assert(kKSplit * 2 == kWarps, "phase-1 warp split");
};

template <int L, int R, int HG>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_split_kernel(MlaDecodeSplitArgs a) {
  using C = Config<L, R, HG>;
  constexpr int W = C::W;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* s_kv = smem;                          // [2][kTile][kStride]
  float* s_q = s_kv + 2 * C::kKvFloats;        // [HG][kStride]
  float* s_part = s_q + HG * C::kStride;       // [kKSplit][HG][kTile]
  float* s_p = s_part + kKSplit * HG * kTile;  // [kTile][kPStride]
  float* s_alpha = s_p + kTile * C::kPStride;  // [HG]; at the end 1/d per head

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int h0 = blockIdx.x * HG;
  const int split = blockIdx.y;
  const int b = blockIdx.z;
  const int seq_len = a.seq_lens[b];
  const int chunk_begin = split * a.chunk_len;
  const int chunk_end = min(seq_len, chunk_begin + a.chunk_len);
  const int num_tiles = chunk_end > chunk_begin ? (chunk_end - chunk_begin + kTile - 1) / kTile : 0;
  const int32_t* table = a.block_table + static_cast<int64_t>(b) * a.max_blocks_per_seq;

  // Query rows of the group (zero past H) into shared memory.
  for (int i = tid; i < HG * C::W4; i += kThreads) {
    const int h = i / C::W4, c = i % C::W4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (h0 + h < a.num_heads)
      v = reinterpret_cast<const float4*>(a.q +
                                          (static_cast<int64_t>(b) * a.num_heads + h0 + h) * W)[c];
    *reinterpret_cast<float4*>(s_q + h * C::kStride + 4 * c) = v;
  }

  // Tile loads (see KvTileLoader).
  KvTileLoader<C> ld{a.kv_pool, table,     a.block_size, W,   chunk_begin,
                     chunk_end, num_tiles, warp,         lane};

  if (num_tiles > 0) {
    ld.fetch(0);
    ld.issue(s_kv, 0, ld.blk_next, ld.off_next);
  }
  cp_async_commit();
  ld.fetch(1);

  // Online-softmax state of the heads this warp owns in step 2 (heads warp + 8i), log2 domain.
  constexpr int kHW = HG / kWarps;
  float m_run[kHW], d_run[kHW];
#pragma unroll
  for (int i = 0; i < kHW; ++i) {
    m_run[i] = -INFINITY;
    d_run[i] = 0.f;
  }
  // Phase-2 accumulators: heads hb2*8 + i, float4 columns dt + kNDT*c.
  const int hb2 = tid / C::kNDT, dt = tid % C::kNDT;
  float4 acc[C::kCPT][8];
#pragma unroll
  for (int c = 0; c < C::kCPT; ++c)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[c][i] = make_float4(0.f, 0.f, 0.f, 0.f);

  const float scale_log2 = a.scale * 1.4426950408889634f;

  for (int it = 0; it < num_tiles; ++it) {
    const int buf = it & 1;
    if (it + 1 < num_tiles) {
      const int blk = ld.blk_next, off = ld.off_next;
      ld.fetch(it + 2);
      ld.issue(s_kv, buf ^ 1, blk, off);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const float* kv = s_kv + buf * C::kKvFloats;

    // 1. partial scores over this warp's K range
    {
      const int tg = warp & 1, ks = warp >> 1;
      const int hb = lane >> 2, tb = lane & 3;
      float s[C::kTH1][4];
#pragma unroll
      for (int i = 0; i < C::kTH1; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) s[i][j] = 0.f;
      const int k_begin = ks * C::kKChunk;
      const int k_end = min(C::W4, k_begin + C::kKChunk);
#pragma unroll 4
      for (int k4 = k_begin; k4 < k_end; ++k4) {
        float4 qv[C::kTH1], kvv[4];
#pragma unroll
        for (int i = 0; i < C::kTH1; ++i)
          qv[i] = *reinterpret_cast<const float4*>(s_q + (hb + 8 * i) * C::kStride + 4 * k4);
#pragma unroll
        for (int j = 0; j < 4; ++j)
          kvv[j] =
              *reinterpret_cast<const float4*>(kv + (tg * 16 + tb + 4 * j) * C::kStride + 4 * k4);
#pragma unroll
        for (int i = 0; i < C::kTH1; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            s[i][j] = fmaf(qv[i].x, kvv[j].x, s[i][j]);
            s[i][j] = fmaf(qv[i].y, kvv[j].y, s[i][j]);
            s[i][j] = fmaf(qv[i].z, kvv[j].z, s[i][j]);
            s[i][j] = fmaf(qv[i].w, kvv[j].w, s[i][j]);
          }
      }
#pragma unroll
      for (int i = 0; i < C::kTH1; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
          s_part[(ks * HG + hb + 8 * i) * kTile + tg * 16 + tb + 4 * j] = s[i][j];
    }
    __syncthreads();

    // 2. online softmax: warp owns heads warp + 8i, lane = token
    {
      const int pos = chunk_begin + it * kTile + lane;
#pragma unroll
      for (int i = 0; i < kHW; ++i) {
        const int h = warp + kWarps * i;
        float x = 0.f;
#pragma unroll
        for (int ks = 0; ks < kKSplit; ++ks) x += s_part[(ks * HG + h) * kTile + lane];
        x = pos < chunk_end ? x * scale_log2 : -INFINITY;
        const float m_new = fmaxf(m_run[i], warp_max(x));
        // m_new is finite once one valid token was seen; guard the all -inf case anyway
        const float p = m_new == -INFINITY ? 0.f : exp2f(x - m_new);
        const float alpha = m_run[i] == -INFINITY ? 0.f : exp2f(m_run[i] - m_new);
        d_run[i] = d_run[i] * alpha + warp_sum(p);
        m_run[i] = m_new;
        s_p[lane * C::kPStride + h] = p;
        if (lane == 0) s_alpha[h] = alpha;
      }
    }
    __syncthreads();

    // 3. rescale and accumulate P . KV[:, :L]
    {
      float al[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) al[i] = s_alpha[hb2 * 8 + i];
#pragma unroll
      for (int c = 0; c < C::kCPT; ++c)
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          acc[c][i].x *= al[i];
          acc[c][i].y *= al[i];
          acc[c][i].z *= al[i];
          acc[c][i].w *= al[i];
        }
#pragma unroll 4
      for (int t = 0; t < kTile; ++t) {
        const float4 p0 = *reinterpret_cast<const float4*>(s_p + t * C::kPStride + hb2 * 8);
        const float4 p1 = *reinterpret_cast<const float4*>(s_p + t * C::kPStride + hb2 * 8 + 4);
        const float pv[8] = {p0.x, p0.y, p0.z, p0.w, p1.x, p1.y, p1.z, p1.w};
#pragma unroll
        for (int c = 0; c < C::kCPT; ++c) {
          const int col = dt + C::kNDT * c;
          if (C::L4 % C::kNDT != 0 && col >= C::L4) continue;
          const float4 v = *reinterpret_cast<const float4*>(kv + t * C::kStride + 4 * col);
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            acc[c][i].x = fmaf(pv[i], v.x, acc[c][i].x);
            acc[c][i].y = fmaf(pv[i], v.y, acc[c][i].y);
            acc[c][i].z = fmaf(pv[i], v.z, acc[c][i].z);
            acc[c][i].w = fmaf(pv[i], v.w, acc[c][i].w);
          }
        }
      }
    }
    __syncthreads();  // buffer `buf` and s_p/s_alpha are rewritten next iteration
  }

  // Finalise: 1/d through shared memory, lse by the owning warp.
  const int64_t row0 = (static_cast<int64_t>(split) * a.batch + b) * a.num_heads;
  store_softmax_totals(m_run, d_run, s_alpha, a.lse + row0 + h0, a.num_heads - h0, warp, lane);
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int h = hb2 * 8 + i;
    if (h0 + h >= a.num_heads) continue;
    const float inv = s_alpha[h];
    float4* o = reinterpret_cast<float4*>(a.out + (row0 + h0 + h) * L);
#pragma unroll
    for (int c = 0; c < C::kCPT; ++c) {
      const int col = dt + C::kNDT * c;
      if (C::L4 % C::kNDT != 0 && col >= C::L4) continue;
      o[col] =
          make_float4(acc[c][i].x * inv, acc[c][i].y * inv, acc[c][i].z * inv, acc[c][i].w * inv);
    }
  }
}

}  // namespace mla

template <int L, int R, int HG>
cudaError_t launch_mla_decode_split(const MlaDecodeSplitArgs& a, cudaStream_t stream) {
  using C = mla::Config<L, R, HG>;
  auto kernel = mla::mla_decode_split_kernel<L, R, HG>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(C::kSmemBytes));
  if (err != cudaSuccess) return err;
  const dim3 grid((a.num_heads + HG - 1) / HG, a.num_splits, a.batch);
  kernel<<<grid, mla::kThreads, C::kSmemBytes, stream>>>(a);
  return cudaGetLastError();
}

#define HELIX_INSTANTIATE_MLA_DECODE(L, R, HG) \
  template cudaError_t launch_mla_decode_split<L, R, HG>(const MlaDecodeSplitArgs&, cudaStream_t);

}  // namespace helix::cuda
