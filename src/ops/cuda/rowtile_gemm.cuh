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

// 16 consecutive weights starting at element k0 of row w (k elements) as fp32.
template <typename WT, bool VEC>
__device__ __forceinline__ void load16(const WT* w, int k0, int k, float* out) {
  if (VEC && k0 + 16 <= k) {
    if constexpr (sizeof(WT) == 1) {
      const uint4 v = *reinterpret_cast<const uint4*>(w + k0);
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const __nv_fp8x2_storage_t pair =
              static_cast<__nv_fp8x2_storage_t>((words[q] >> (16 * h)) & 0xffffu);
          const __half2 hv = __half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3));
          const float2 f = __half22float2(hv);
          out[q * 4 + h * 2] = f.x;
          out[q * 4 + h * 2 + 1] = f.y;
        }
      }
    } else if constexpr (sizeof(WT) == 2) {
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const uint4 v = *reinterpret_cast<const uint4*>(w + k0 + 8 * q);
        const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          __nv_bfloat162 b;
          *reinterpret_cast<uint32_t*>(&b) = words[i];
          const float2 f = __bfloat1622float2(b);
          out[q * 8 + i * 2] = f.x;
          out[q * 8 + i * 2 + 1] = f.y;
        }
      }
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 v = *reinterpret_cast<const float4*>(w + k0 + 4 * q);
        out[q * 4] = v.x;
        out[q * 4 + 1] = v.y;
        out[q * 4 + 2] = v.z;
        out[q * 4 + 3] = v.w;
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      float f = 0.0f;
      if (k0 + j < k) {
        if constexpr (sizeof(WT) == 1)
          f = static_cast<float>(w[k0 + j]);
        else if constexpr (sizeof(WT) == 2)
          f = __bfloat162float(w[k0 + j]);
        else
          f = w[k0 + j];
      }
      out[j] = f;
    }
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
template <typename WT, typename XT, bool VEC>
__global__ void __launch_bounds__(kGemmWarps * 32) rowtile_gemm_kernel(const RowTileArgs a) {
  int g = 0, r0, r1;
  if (a.tiles) {
    if (static_cast<int>(blockIdx.x) >= a.tiles[0]) return;
    g = a.tiles[1 + 2 * blockIdx.x];
    r0 = a.tiles[2 + 2 * blockIdx.x];
    r1 = min(r0 + kTileRows, a.offsets[g + 1]);
  } else {
    r0 = blockIdx.x * kTileRows;
    r1 = min(r0 + kTileRows, a.m);
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

  float acc[kColsPerWarp][kTileRows];
#pragma unroll
  for (int c = 0; c < kColsPerWarp; ++c)
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) acc[c][r] = 0.0f;

  for (int k0 = lane * 16; k0 < a.k; k0 += kChunk) {
    float wf[kColsPerWarp][16];
#pragma unroll
    for (int c = 0; c < kColsPerWarp; ++c) {
      const int col = min(col0 + c, a.n - 1);  // a clamped column computes a discarded value
      load16<WT, VEC>(w + static_cast<int64_t>(col) * a.k, k0, a.k, wf[c]);
      if (scale) {
        const float s = scale[(col / kFp8BlockSize) * kblocks + k0 / kFp8BlockSize];
#pragma unroll
        for (int j = 0; j < 16; ++j) wf[c][j] *= s;
      }
    }
#pragma unroll
    for (int r = 0; r < kTileRows; ++r) {
      if (r >= nr) break;
      const XT* xr = x + static_cast<int64_t>(r) * a.ldx;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 xv = load4x<XT, VEC>(xr, k0 + 4 * q, a.k);
#pragma unroll
        for (int c = 0; c < kColsPerWarp; ++c) {
          acc[c][r] = fmaf(xv.x, wf[c][q * 4], acc[c][r]);
          acc[c][r] = fmaf(xv.y, wf[c][q * 4 + 1], acc[c][r]);
          acc[c][r] = fmaf(xv.z, wf[c][q * 4 + 2], acc[c][r]);
          acc[c][r] = fmaf(xv.w, wf[c][q * 4 + 3], acc[c][r]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kTileRows; ++r) {
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

template <typename WT, typename XT>
void launch_typed(const RowTileArgs& a, bool vec, dim3 grid, cudaStream_t stream) {
  const dim3 block(kGemmWarps * 32);
  if (vec)
    rowtile_gemm_kernel<WT, XT, true><<<grid, block, 0, stream>>>(a);
  else
    rowtile_gemm_kernel<WT, XT, false><<<grid, block, 0, stream>>>(a);
}

template <typename WT>
void launch_w(const RowTileArgs& a, bool vec, dim3 grid, cudaStream_t stream) {
  if (a.x_dtype == CudaDType::kBF16)
    launch_typed<WT, __nv_bfloat16>(a, vec, grid, stream);
  else
    launch_typed<WT, float>(a, vec, grid, stream);
}

// Launches the kernel for weight dtype wt over row_tiles x ceil(n / kColsPerBlock) blocks.
inline cudaError_t launch_rowtile_gemm(const RowTileArgs& a, CudaDType wt, bool aligned,
                                       int row_tiles, cudaStream_t stream) {
  if (row_tiles <= 0 || a.n <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(row_tiles), ceil_div(a.n, kColsPerBlock));
  // Vector loads need 16-byte weight rows and 8/16-byte activation rows.
  const bool vec = aligned && (a.k * static_cast<int64_t>(dtype_bytes(wt))) % 16 == 0 &&
                   a.ldx % 4 == 0 && (reinterpret_cast<uintptr_t>(a.x) & 15) == 0;
  switch (wt) {
    case CudaDType::kF8E4M3:
      launch_w<__nv_fp8_e4m3>(a, vec, grid, stream);
      break;
    case CudaDType::kBF16:
      launch_w<__nv_bfloat16>(a, vec, grid, stream);
      break;
    default:
      launch_w<float>(a, vec, grid, stream);
  }
  return cudaGetLastError();
}

}  // namespace opsk
}  // namespace helix
