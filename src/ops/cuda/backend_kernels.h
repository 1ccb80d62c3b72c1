#pragma once
// Glue kernels of CudaOps (backend_kernels.cu). C++17-clean.
#include <cstdint>

#include <cuda_runtime.h>

namespace helix {

// y[r, :cols] += x[bias_row ? 0 : r, :cols]; y and x each f32 or bf16 (fp32 sums).
cudaError_t add_rows_cuda(void* y, int64_t ldy, bool y_bf16, const void* x, int64_t ldx,
                          bool x_bf16, int rows, int cols, bool bias_row, cudaStream_t stream);
// For each group g: out[dst[g]] += sum_{e in [offsets[g], offsets[g+1])} w[e] * y[src[e]], in
// entry order (distinct dst per group). out, y [*, dim] of one dtype (f32 or bf16).
cudaError_t scatter_add_rows_cuda(void* out, const void* y, bool bf16, const int32_t* offsets,
                                  const int32_t* dst, const int32_t* src, const float* w,
                                  int num_dst, int dim, cudaStream_t stream);

}  // namespace helix
