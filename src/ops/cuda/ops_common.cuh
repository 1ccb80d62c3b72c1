#pragma once
// Shared device helpers of the op library (ops_cuda.h): dtype-generic loads and stores with fp32
// in registers, and warp/block reductions.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/ops_cuda.h"

namespace helix {
namespace opsk {

__device__ __forceinline__ float load_f(const void* p, int64_t i, CudaDType t) {
  switch (t) {
    case CudaDType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CudaDType::kF8E4M3:
      return static_cast<float>(static_cast<const __nv_fp8_e4m3*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_f(void* p, int64_t i, float v, CudaDType t) {
  if (t == CudaDType::kBF16)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p)[i] = v;
}

// Compile-time dtype versions for the hot kernels.
template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `red` is shared scratch of 32 floats; the call ends with a barrier so `red` can be reused.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : 0.0f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}

__host__ __device__ inline bool valid_act(CudaDType t) {
  return t == CudaDType::kF32 || t == CudaDType::kBF16;
}
__host__ __device__ inline size_t dtype_bytes(CudaDType t) {
  return t == CudaDType::kF32 ? 4 : t == CudaDType::kBF16 ? 2 : 1;
}
inline unsigned ceil_div(int64_t a, int64_t b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

}  // namespace opsk
}  // namespace helix
