// Exact combine of partial attention outputs (CUDA form of ops/cpu/attn_combine.cpp).
#include <cmath>

#include "ops/cuda/cuda_ops.h"

namespace helix {
namespace {

// One CTA per row. Warp 0 turns the parts' lse into weights in shared memory; then every thread
// sums its columns over the parts of non-zero weight (a -inf part is never read).
template <bool kVec4>
__global__ void attn_combine_kernel(const float* __restrict__ parts, const float* __restrict__ lse,
                                    float* __restrict__ out, float* __restrict__ out_lse,
                                    int num_parts, int rows, int dim) {
  extern __shared__ float s_w[];  // [num_parts]
  const int64_t r = blockIdx.x;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    float m = -INFINITY;
    for (int i = lane; i < num_parts; i += 32)
      m = fmaxf(m, lse[i * static_cast<int64_t>(rows) + r]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float sum = 0.f;
    if (m != -INFINITY)
      for (int i = lane; i < num_parts; i += 32)
        sum += expf(lse[i * static_cast<int64_t>(rows) + r] - m);
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float total = m == -INFINITY ? -INFINITY : m + logf(sum);
    for (int i = lane; i < num_parts; i += 32) {
      const float l = lse[i * static_cast<int64_t>(rows) + r];
      s_w[i] = total == -INFINITY || l == -INFINITY ? 0.f : expf(l - total);
    }
    if (lane == 0 && out_lse) out_lse[r] = total;
  }
  __syncthreads();
  const int64_t stride = static_cast<int64_t>(rows) * dim;
  if (kVec4) {
    const int dim4 = dim / 4;
    for (int c = threadIdx.x; c < dim4; c += blockDim.x) {
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int i = 0; i < num_parts; ++i) {
        const float w = s_w[i];
        if (w == 0.f) continue;
        const float4 v = reinterpret_cast<const float4*>(parts + i * stride + r * dim)[c];
        acc.x = fmaf(w, v.x, acc.x);
        acc.y = fmaf(w, v.y, acc.y);
        acc.z = fmaf(w, v.z, acc.z);
        acc.w = fmaf(w, v.w, acc.w);
      }
      reinterpret_cast<float4*>(out + r * dim)[c] = acc;
    }
  } else {
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
      float acc = 0.f;
      for (int i = 0; i < num_parts; ++i) {
        const float w = s_w[i];
        if (w != 0.f) acc = fmaf(w, parts[i * stride + r * dim + d], acc);
      }
      out[r * dim + d] = acc;
    }
  }
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

}  // namespace

cudaError_t attn_combine_cuda(const float* parts, const float* lse, float* out, float* out_lse,
                              int num_parts, int rows, int dim, cudaStream_t stream) {
  if (num_parts < 0 || rows < 0 || dim < 0) return cudaErrorInvalidValue;
  if (rows == 0 || (dim == 0 && !out_lse)) return cudaSuccess;
  if (!lse || !out || (num_parts > 0 && dim > 0 && !parts)) return cudaErrorInvalidValue;
  const bool vec4 = dim % 4 == 0 && aligned16(parts) && aligned16(out);
  const int work = vec4 ? dim / 4 : dim;
  int threads = ((work + 31) / 32) * 32;
  threads = threads < 32 ? 32 : (threads > 256 ? 256 : threads);
  // Rounded up and padded: nvcc may read the weights as vectors past the last one.
  const size_t smem = sizeof(float) * ((static_cast<size_t>(num_parts) + 3) / 4 * 4 + 4);
  if (smem > 48 * 1024) return cudaErrorInvalidValue;  // > 12288 parts: not a real use
  if (vec4)
    attn_combine_kernel<true>
        <<<rows, threads, smem, stream>>>(parts, lse, out, out_lse, num_parts, rows, dim);
  else
    attn_combine_kernel<false>
        <<<rows, threads, smem, stream>>>(parts, lse, out, out_lse, num_parts, rows, dim);
  return cudaGetLastError();
}

}  // namespace helix
