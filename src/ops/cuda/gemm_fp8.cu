// y = x · w^T with FP8 E4M3 weights and their 128x128 block scales applied inside the kernel
// (the FP8 branch of gemm_cuda, ops_cuda.h); the weights are never widened in memory.
#include "ops/cuda/rowtile_gemm.cuh"

namespace helix {

cudaError_t gemm_fp8_cuda(const GemmCudaParams& p, cudaStream_t stream) {
  if (!p.w_scale) return cudaErrorInvalidValue;
  opsk::RowTileArgs a;
  a.m = p.m;
  a.n = p.n;
  a.k = p.k;
  a.ldx = p.ldx ? p.ldx : p.k;
  a.ldy = p.ldy ? p.ldy : p.n;
  a.x_dtype = p.x_dtype;
  a.y_dtype = p.y_dtype;
  a.x = p.x;
  a.y = p.y;
  a.beta = p.beta;
  a.w = p.w;
  a.scale = p.w_scale;
  const bool aligned = (reinterpret_cast<uintptr_t>(p.w) & 15) == 0;
  return opsk::launch_rowtile_gemm(a, CudaDType::kF8E4M3, aligned,
                                   static_cast<int>(opsk::ceil_div(p.m, opsk::kTileRows)), stream);
}

}  // namespace helix
