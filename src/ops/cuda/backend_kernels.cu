// Small kernels of CudaOps that are layout glue rather than model ops: strided / broadcast row
// adds and the ordered scatter-add of expert outputs (the reference's expert order, per row).
#include <cuda_bf16.h>

#include "ops/cuda/backend_kernels.h"

namespace helix {

namespace {

__device__ inline float ld(const void* p, int64_t i, bool bf16) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i])
              : static_cast<const float*>(p)[i];
}
__device__ inline void st(void* p, int64_t i, float v, bool bf16) {
  if (bf16)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
  else
    static_cast<float*>(p)[i] = v;
}

__global__ void add_rows_kernel(void* y, int64_t ldy, bool ybf, const void* x, int64_t ldx,
                                bool xbf, int rows, int cols, bool bias_row) {
  const int r = blockIdx.y;
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
    const int64_t yi = static_cast<int64_t>(r) * ldy + c;
    const int64_t xi = (bias_row ? 0 : static_cast<int64_t>(r) * ldx) + c;
    st(y, yi, ld(y, yi, ybf) + ld(x, xi, xbf), ybf);
  }
}

// out row t += sum over its entries e in [offsets[t], offsets[t+1]) of w[e] * y[src[e]], in order.
__global__ void scatter_add_kernel(void* out, const void* y, bool bf, const int32_t* offsets,
                                   const int32_t* dst, const int32_t* src, const float* w,
                                   int dim) {
  const int g = blockIdx.y;
  const int t = dst[g];
  const int e0 = offsets[g], e1 = offsets[g + 1];
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < dim; d += gridDim.x * blockDim.x) {
    const int64_t oi = static_cast<int64_t>(t) * dim + d;
    float acc = ld(out, oi, bf);
    for (int e = e0; e < e1; ++e) acc += w[e] * ld(y, static_cast<int64_t>(src[e]) * dim + d, bf);
    st(out, oi, acc, bf);
  }
}

}  // namespace

cudaError_t add_rows_cuda(void* y, int64_t ldy, bool y_bf16, const void* x, int64_t ldx,
                          bool x_bf16, int rows, int cols, bool bias_row, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  dim3 grid((cols + 255) / 256, rows);
  add_rows_kernel<<<grid, 256, 0, stream>>>(y, ldy, y_bf16, x, ldx, x_bf16, rows, cols, bias_row);
  return cudaGetLastError();
}

cudaError_t scatter_add_rows_cuda(void* out, const void* y, bool bf16, const int32_t* offsets,
                                  const int32_t* dst, const int32_t* src, const float* w,
                                  int num_dst, int dim, cudaStream_t stream) {
  if (num_dst <= 0) return cudaSuccess;
  dim3 grid((dim + 255) / 256, num_dst);
  scatter_add_kernel<<<grid, 256, 0, stream>>>(out, y, bf16, offsets, dst, src, w, dim);
  return cudaGetLastError();
}

}  // namespace helix
