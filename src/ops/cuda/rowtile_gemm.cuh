#pragma once
// The memory-bound GEMM behind gemm_fp8.cu and gemm_grouped.cu: y[rows, n] = x[rows, k] ·
// w[n, k]^T for row tiles of up to kTileRows rows, weights fp32/bf16/FP8 (block scales applied on
// load). Decode multiplies few rows by large weights, so the kernel is built to stream each
// weight byte once per row tile: a warp owns kColsPerWarp output columns, each lane reads 16
// consecutive weights of a column per 512-wide K chunk (one 16-byte load for FP8) and the matching
// activations of each row of the tile from global memory (small, cached), with no barriers.
// Row tiles run in blockIdx.x (fastest), so tiles that share weights run together and re-reads
// hit L2.
#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace opsk {

constexpr int kTileRows = 8;
constexpr int kColsPerWarp = 4;
constexpr int kGemmWarps = 4;
constexpr int kColsPerBlock = kColsPerWarp * kGemmWarps;
constexpr int kChunk = 512;  // K elements per chunk: 32 lanes x 16

struct RowTileArgs {
  int m = 0, n = 0, k = 0, ldx = 0, ldy = 0;
  CudaDType x_dtype = CudaDType::kF32, y_dtype = CudaDType::kF32;
  const void* x = nullptr;
  void* y = nullptr;
  float beta = 0.0f;
  // Dense: one weight; grouped: per-group pointers and the tile list of grouped_gemm.
  const void* w = nullptr;
  const float* scale = nullptr;
  const void* const* w_ptrs = nullptr;
  const float* const* scale_ptrs = nullptr;
  const int32_t* offsets = nullptr;
  const int32_t* tiles = nullptr;  // [1 + 2*max_tiles]: count, then (group, first row) pairs
};

// 16 consecutive weights of one row kept as raw bits (sizeof(WT) x 16 bytes) until used, so a
// lane can hold the next chunk's load in flight while it computes on the current one.
template <typename WT>
struct Raw16 {
  uint4 v[sizeof(WT)];
};

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <typename WT, bool VEC>
__device__ __forceinline__ void load_raw(const WT* w, int k0, int k, Raw16<WT>& r) {
  if (VEC && k0 + 16 <= k) {
#pragma unroll
    for (int i = 0; i < static_cast<int>(sizeof(WT)); ++i)
      r.v[i] = __ldg(reinterpret_cast<const uint4*>(w + k0) + i);
    return;
  }
  // Tail or unaligned rows: assemble the same bits element by element (zero past k).
  uint32_t words[4 * sizeof(WT)];
#pragma unroll
  for (int i = 0; i < static_cast<int>(4 * sizeof(WT)); ++i) words[i] = 0;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    uint32_t bits = 0;
    if (k0 + j < k) {
      if constexpr (sizeof(WT) == 1)
        bits = reinterpret_cast<const uint8_t*>(w)[k0 + j];
      else if constexpr (sizeof(WT) == 2)
        bits = reinterpret_cast<const uint16_t*>(w)[k0 + j];
      else
        bits = reinterpret_cast<const uint32_t*>(w)[k0 + j];
    }
    constexpr int per_word = 4 / sizeof(WT);
    words[j / per_word] |= bits << (8 * sizeof(WT) * (j % per_word));
  }
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(WT)); ++i)
    r.v[i] = make_uint4(words[4 * i], words[4 * i + 1], words[4 * i + 2], words[4 * i + 3]);
}

// Elements 4q .. 4q+3 of a Raw16 as fp32.
template <typename WT>
__device__ __forceinline__ float4 group4(const Raw16<WT>& r, int q) {
  if constexpr (sizeof(WT) == 1) {
    const uint32_t wd = word_of(r.v[0], q);
    const float2 lo = __half22float2(__half2(
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(wd & 0xffffu), __NV_E4M3)));
    const float2 hi = __half22float2(__half2(
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(wd >> 16), __NV_E4M3)));
    return make_float4(lo.x, lo.y, hi.x, hi.y);
  } else if constexpr (sizeof(WT) == 2) {
    __nv_bfloat162 a, b;
    const uint32_t wa = word_of(r.v[q / 2], (2 * q) % 4), wb = word_of(r.v[q / 2], (2 * q) % 4 + 1);
    *reinterpret_cast<uint32_t*>(&a) = wa;
    *reinterpret_cast<uint32_t*>(&b) = wb;
    const float2 fa = __bfloat1622float2(a), fb = __bfloat1622float2(b);
    return make_float4(fa.x, fa.y, fb.x, fb.y);
  } else {
    return make_float4(__uint_as_float(r.v[q].x), __uint_as_float(r.v[q].y),
                       __uint_as_float(r.v[q].z), __uint_as_float(r.v[q].w));
  }
}

// 4 consecutive activations of row x (k elements) from element k0 as fp32 (zero past k).
template <typename XT, bool VEC>
__device__ __forceinline__ float4 load4x(const XT* x, int k0, int k) {
  if (VEC && k0 + 4 <= k) {
    if constexpr (sizeof(XT) == 2) {
      const uint2 v = *reinterpret_cast<const uint2*>(x + k0);
      __nv_bfloat162 a, b;
      *reinterpret_cast<uint32_t*>(&a) = v.x;
      *reinterpret_cast<uint32_t*>(&b) = v.y;
      const float2 fa = __bfloat1622float2(a), fb = __bfloat1622float2(b);
      return make_float4(fa.x, fa.y, fb.x, fb.y);
    } else {
      return *reinterpret_cast<const float4*>(x + k0);
    }
  }
  float f[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) f[j] = k0 + j < k ? to_f<XT>(x[k0 + j]) : 0.0f;
  return make_float4(f[0], f[1], f[2], f[3]);
}

// Warps stream independently (no barriers): per 512-wide K chunk a lane loads 16 weights of each
// of its columns, then its 16 activations of each row straight from global memory (x is small
// and stays in L1/L2), four at a time.
template <typename WT, typename XT, bool VEC, int ROWS>
__global__ void __launch_bounds__(kGemmWarps * 32) rowtile_gemm_kernel(const RowTileArgs a) {
  int g = 0, r0, r1;
  if (a.tiles) {
    if (static_cast<int>(blockIdx.x) >= a.tiles[0]) return;
    g = a.tiles[1 + 2 * blockIdx.x];
    r0 = a.tiles[2 + 2 * blockIdx.x];
    r1 = min(r0 + ROWS, a.offsets[g + 1]);
  } else {
    r0 = blockIdx.x * ROWS;
    r1 = min(r0 + ROWS, a.m);
  }
  const int nr = r1 - r0;
  if (nr <= 0) return;
  const WT* w = static_cast<const WT*>(a.w_ptrs ? a.w_ptrs[g] : a.w);
  const float* scale = a.scale_ptrs ? a.scale_ptrs[g] : a.scale;
  const XT* x = static_cast<const XT*>(a.x) + static_cast<int64_t>(r0) * a.ldx;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int col0 = blockIdx.y * kColsPerBlock + warp * kColsPerWarp;
  if (col0 >= a.n) return;
  const int kblocks = (a.k + kFp8BlockSize - 1) / kFp8BlockSize;

  float acc[kColsPerWarp][ROWS];
#pragma unroll
  for (int c = 0; c < kColsPerWarp; ++c)
#pragma unroll
    for (int r = 0; r < ROWS; ++r) acc[c][r] = 0.0f;

  // Columns past n are clamped to the last one: they compute a value that is never stored.
  const WT* wrow[kColsPerWarp];
  int srow[kColsPerWarp];
#pragma unroll
  for (int c = 0; c < kColsPerWarp; ++c) {
    const int col = min(col0 + c, a.n - 1);
    wrow[c] = w + static_cast<int64_t>(col) * a.k;
    srow[c] = (col / kFp8BlockSize) * kblocks;
  }
  Raw16<WT> cur[kColsPerWarp], nxt[kColsPerWarp];
  int k0 = lane * 16;
  if (k0 < a.k) {
#pragma unroll
    for (int c = 0; c < kColsPerWarp; ++c) load_raw<WT, VEC>(wrow[c], k0, a.k, cur[c]);
  }
  for (; k0 < a.k; k0 += kChunk) {
    // fp8/bf16: the next chunk's weights are requested before this chunk's math.
    constexpr bool kPrefetch = sizeof(WT) <= 2;
    if (kPrefetch && k0 + kChunk < a.k) {
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) load_raw<WT, VEC>(wrow[c], k0 + kChunk, a.k, nxt[c]);
    }
    float s[kColsPerWarp];
#pragma unroll
    for (int c = 0; c < kColsPerWarp; ++c)
      s[c] = scale ? scale[srow[c] + k0 / kFp8BlockSize] : 1.0f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      float4 wq[kColsPerWarp];
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) {
        wq[c] = group4<WT>(cur[c], q);
        wq[c].x *= s[c];
        wq[c].y *= s[c];
        wq[c].z *= s[c];
        wq[c].w *= s[c];
      }
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        if (r >= nr) break;
        const float4 xv = load4x<XT, VEC>(x + static_cast<int64_t>(r) * a.ldx, k0 + 4 * q, a.k);
#pragma unroll
        for (int c = 0; c < kColsPerWarp; ++c) {
          acc[c][r] = fmaf(xv.x, wq[c].x, acc[c][r]);
          acc[c][r] = fmaf(xv.y, wq[c].y, acc[c][r]);
          acc[c][r] = fmaf(xv.z, wq[c].z, acc[c][r]);
          acc[c][r] = fmaf(xv.w, wq[c].w, acc[c][r]);
        }
      }
    }
    if (k0 + kChunk < a.k) {
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) {
        if (kPrefetch)
          cur[c] = nxt[c];
        else
          load_raw<WT, VEC>(wrow[c], k0 + kChunk, a.k, cur[c]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    if (r >= nr) break;
#pragma unroll
    for (int c = 0; c < kColsPerWarp; ++c) {
      const float v = warp_sum(acc[c][r]);
      const int col = col0 + c;
      if (lane == 0 && col < a.n) {
        const int64_t i = static_cast<int64_t>(r0 + r) * a.ldy + col;
        const float prev = a.beta != 0.0f ? a.beta * load_f(a.y, i, a.y_dtype) : 0.0f;
        store_f(a.y, i, v + prev, a.y_dtype);
      }
    }
  }
}

template <typename WT, typename XT, int ROWS>
void launch_rows(const RowTileArgs& a, bool vec, dim3 grid, cudaStream_t stream) {
  const dim3 block(kGemmWarps * 32);
  if (vec)
    rowtile_gemm_kernel<WT, XT, true, ROWS><<<grid, block, 0, stream>>>(a);
  else
    rowtile_gemm_kernel<WT, XT, false, ROWS><<<grid, block, 0, stream>>>(a);
}

template <typename WT, typename XT>
void launch_typed(const RowTileArgs& a, bool vec, int rows, dim3 grid, cudaStream_t stream) {
  // Few rows (decode at small batch) get kernels with few accumulators: more warps per SM,
  // more weight bytes in flight.
  if (rows <= 1)
    launch_rows<WT, XT, 1>(a, vec, grid, stream);
  else if (rows <= 2)
    launch_rows<WT, XT, 2>(a, vec, grid, stream);
  else if (rows <= 4)
    launch_rows<WT, XT, 4>(a, vec, grid, stream);
  else
    launch_rows<WT, XT, 8>(a, vec, grid, stream);
}

template <typename WT>
void launch_w(const RowTileArgs& a, bool vec, int rows, dim3 grid, cudaStream_t stream) {
  if (a.x_dtype == CudaDType::kBF16)
    launch_typed<WT, __nv_bfloat16>(a, vec, rows, grid, stream);
  else
    launch_typed<WT, float>(a, vec, rows, grid, stream);
}

// Rows per tile for a GEMM whose tiles hold about `avg_rows` rows: 1, 2, 4 or kTileRows.
inline int tile_rows_for(int avg_rows) {
  return avg_rows <= 1 ? 1 : avg_rows <= 2 ? 2 : avg_rows <= 4 ? 4 : kTileRows;
}

// Launches the kernel for weight dtype wt over row_tiles x ceil(n / kColsPerBlock) blocks.
// tile_rows: one of 1, 2, 4, kTileRows (tile_rows_for), the rows of each tile.
inline cudaError_t launch_rowtile_gemm(const RowTileArgs& a, CudaDType wt, bool aligned,
                                       int tile_rows, int row_tiles, cudaStream_t stream) {
  if (row_tiles <= 0 || a.n <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(row_tiles), ceil_div(a.n, kColsPerBlock));
  // Vector loads need 16-byte weight rows and 8/16-byte activation rows.
  const bool vec = aligned && (a.k * static_cast<int64_t>(dtype_bytes(wt))) % 16 == 0 &&
                   a.ldx % 4 == 0 && (reinterpret_cast<uintptr_t>(a.x) & 15) == 0;
  switch (wt) {
    case CudaDType::kF8E4M3:
      launch_w<__nv_fp8_e4m3>(a, vec, tile_rows, grid, stream);
      break;
    case CudaDType::kBF16:
      launch_w<__nv_bfloat16>(a, vec, tile_rows, grid, stream);
      break;
    default:
      launch_w<float>(a, vec, tile_rows, grid, stream);
  }
  return cudaGetLastError();
}

}  // namespace opsk
}  // namespace helix
