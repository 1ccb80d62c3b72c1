// Elementwise ops of ops_cuda.h: add (residual), dtype casts, silu_mul.
#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

using opsk::load_f;
using opsk::store_f;

unsigned grid_for(int64_t n) {
  const int64_t b = (n + 255) / 256;
  return static_cast<unsigned>(b < 65536 ? b : 65536);
}

__global__ void add_kernel(int64_t n, CudaDType t, const void* a, const void* b, void* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_f(out, i, load_f(a, i, t) + load_f(b, i, t), t);
}

__global__ void cast_kernel(int64_t n, CudaDType ti, const void* in, CudaDType to, void* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    store_f(out, i, load_f(in, i, ti), to);
}

__global__ void silu_mul_kernel(SiluMulCudaParams p, int lg, int lu, int lo) {
  const int r = blockIdx.y;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.dim; i += gridDim.x * blockDim.x) {
    const float g = load_f(p.gate, static_cast<int64_t>(r) * lg + i, p.dtype);
    const float u = load_f(p.up, static_cast<int64_t>(r) * lu + i, p.dtype);
    // silu(g) = g / (1 + exp(-g)), as silu_mul.cpp.
    store_f(p.out, static_cast<int64_t>(r) * lo + i, g / (1.0f + expf(-g)) * u, p.dtype);
  }
}

}  // namespace

cudaError_t add_cuda(const AddCudaParams& p, cudaStream_t stream) {
  if (p.n < 0 || !opsk::valid_act(p.dtype)) return cudaErrorInvalidValue;
  if (p.n == 0) return cudaSuccess;
  add_kernel<<<grid_for(p.n), 256, 0, stream>>>(p.n, p.dtype, p.a, p.b, p.out);
  return cudaGetLastError();
}

cudaError_t cast_cuda(const CastCudaParams& p, cudaStream_t stream) {
  if (p.n < 0 || !opsk::valid_act(p.in_dtype) || !opsk::valid_act(p.out_dtype))
    return cudaErrorInvalidValue;
  if (p.n == 0) return cudaSuccess;
  cast_kernel<<<grid_for(p.n), 256, 0, stream>>>(p.n, p.in_dtype, p.in, p.out_dtype, p.out);
  return cudaGetLastError();
}

cudaError_t silu_mul_cuda(const SiluMulCudaParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.dim < 0 || !opsk::valid_act(p.dtype) || p.rows > 65535)
    return cudaErrorInvalidValue;
  if (p.rows == 0 || p.dim == 0) return cudaSuccess;
  const dim3 grid(opsk::ceil_div(p.dim, 256) < 64 ? opsk::ceil_div(p.dim, 256) : 64, p.rows);
  silu_mul_kernel<<<grid, 256, 0, stream>>>(p, p.ld_gate ? p.ld_gate : p.dim,
                                            p.ld_up ? p.ld_up : p.dim, p.ld_out ? p.ld_out : p.dim);
  return cudaGetLastError();
}

}  // namespace helix
