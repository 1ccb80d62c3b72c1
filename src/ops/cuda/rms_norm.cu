// rms_norm_cuda (ops_cuda.h): one block per row, fp32 sum of squares.
#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

__global__ void rms_norm_kernel(RmsNormCudaParams p, int ldx, int ldy) {
  __shared__ float red[32];
  const int64_t xo = static_cast<int64_t>(blockIdx.x) * ldx;
  const int64_t yo = static_cast<int64_t>(blockIdx.x) * ldy;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float v = opsk::load_f(p.x, xo + i, p.dtype);
    ss += v * v;
  }
  ss = opsk::block_sum(ss, red);  // ends with a barrier: x may alias y
  const float inv = 1.0f / sqrtf(ss / p.dim + p.eps);
  for (int i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float v = opsk::load_f(p.x, xo + i, p.dtype);
    opsk::store_f(p.y, yo + i, opsk::load_f(p.w, i, p.w_dtype) * (v * inv), p.dtype);
  }
}

}  // namespace

cudaError_t rms_norm_cuda(const RmsNormCudaParams& p, cudaStream_t stream) {
  if (p.rows < 0 || p.dim <= 0 || !opsk::valid_act(p.dtype) || !opsk::valid_act(p.w_dtype))
    return cudaErrorInvalidValue;
  if (p.rows == 0) return cudaSuccess;
  const int threads = p.dim >= 1024 ? 1024 : ((p.dim + 31) / 32) * 32;
  rms_norm_kernel<<<p.rows, threads, 0, stream>>>(p, p.ldx ? p.ldx : p.dim, p.ldy ? p.ldy : p.dim);
  return cudaGetLastError();
}

}  // namespace helix
