// mla_kv_write_cuda (mla_decode_bf16.h): the one CUDA writer of the bf16 and FP8 latent KV rows
// that the bf16 / FP8 MLA kernels read. CudaOps::kv_write calls it for every bf16 or FP8 pool;
// fp32 pools (the float32 reference path) go through kv_write_cuda (kv_write.cu). The CPU
// reference of both layouts is core/float_codec.h + ops/cpu/kv_fp8.cpp: the bytes are equal
// (tests/cuda/backend_ops_kv_fp8.cpp, test_backend_ops).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "ops/cuda/mla_decode_bf16.h"

namespace helix {
namespace {

// One warp per token.
__global__ void mla_kv_write_kernel(MlaKvWriteParams p, size_t row_bytes) {
  const int64_t tok = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (tok >= p.num_tokens) return;
  const int64_t slot = p.slot_mapping[tok];
  if (slot < 0) return;
  const int L = p.kv_lora_rank, W = p.kv_lora_rank + p.rope_dim;
  const int64_t stride = p.src_stride > 0 ? p.src_stride : W;
  auto src = [&](int i) {
    return p.src_bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p.src)[tok * stride + i])
                      : static_cast<const float*>(p.src)[tok * stride + i];
  };
  uint8_t* row = static_cast<uint8_t*>(p.kv_pool) + slot * static_cast<int64_t>(row_bytes);
  if (p.kv_dtype == MlaKvDtype::kBf16) {
    __nv_bfloat16* r = reinterpret_cast<__nv_bfloat16*>(row);
    for (int i = lane; i < W; i += 32) r[i] = __float2bfloat16(src(i));
    return;
  }
  float amax = 0.f;
  for (int i = lane; i < L; i += 32) amax = fmaxf(amax, fabsf(src(i)));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float scale = amax > 0.f ? amax / 448.f : 1.f;
  const float inv = 1.f / scale;
  for (int i = lane; i < L; i += 32)
    row[i] = __nv_cvt_float_to_fp8(src(i) * inv, __NV_SATFINITE, __NV_E4M3);
  __nv_bfloat16* rope = reinterpret_cast<__nv_bfloat16*>(row + L);
  for (int i = lane; i < p.rope_dim; i += 32) rope[i] = __float2bfloat16(src(L + i));
  if (lane == 0) *reinterpret_cast<float*>(row + L + 2 * p.rope_dim) = scale;
  for (size_t i = L + 2 * p.rope_dim + 4 + lane; i < row_bytes; i += 32) row[i] = 0;
}

}  // namespace

cudaError_t mla_kv_write_cuda(const MlaKvWriteParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.kv_lora_rank <= 0 || p.rope_dim < 0) return cudaErrorInvalidValue;
  if (p.num_tokens == 0) return cudaSuccess;
  if (!p.src || !p.slot_mapping || !p.kv_pool) return cudaErrorInvalidValue;
  const size_t row_bytes = mla_kv_row_bytes(p.kv_dtype, p.kv_lora_rank, p.rope_dim);
  const int threads = 256;
  const int64_t blocks = (static_cast<int64_t>(p.num_tokens) * 32 + threads - 1) / threads;
  mla_kv_write_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p, row_bytes);
  return cudaGetLastError();
}

}  // namespace helix
