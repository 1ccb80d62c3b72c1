// Dense GEMMs through cuBLAS: gemm_cuda (f32/bf16 weights; FP8 goes to gemm_fp8.cu, GemmAlgo::kMma
// to the tensor-core kernel of gemm_mma.cu) and the strided batched form (ops_cuda.h). Row-major y
// = x·w^T is column-major y^T = w·x^T, so w is cuBLAS's A (transposed) and x its B.
#include <cublas_v2.h>

#include "ops/cuda/ops_cuda.h"

namespace helix {

// gemm_fp8.cu, gemm_mma.cu
cudaError_t gemm_fp8_cuda(const CudaOpsContext& ctx, const GemmCudaParams& p, cudaStream_t stream);
bool gemm_mma_applies(const GemmCudaParams& p);
cudaError_t gemm_mma_cuda(const CudaOpsContext& ctx, const GemmCudaParams& p, cudaStream_t stream);

namespace {

cudaDataType_t cublas_type(CudaDType t) {
  return t == CudaDType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

cudaError_t from_cublas(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return cudaSuccess;
    case CUBLAS_STATUS_INVALID_VALUE:
      return cudaErrorInvalidValue;
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return cudaErrorNotSupported;
    default:
      return cudaErrorUnknown;
  }
}

bool is_act(CudaDType t) {
  return t == CudaDType::kF32 || t == CudaDType::kBF16;
}

}  // namespace

cudaError_t gemm_cuda(const CudaOpsContext& ctx, const GemmCudaParams& p, cudaStream_t stream) {
  if (p.m < 0 || p.n < 0 || p.k < 0 || !is_act(p.x_dtype) || !is_act(p.y_dtype))
    return cudaErrorInvalidValue;
  if (p.m == 0 || p.n == 0) return cudaSuccess;
  if (p.w_dtype == CudaDType::kF8E4M3) return gemm_fp8_cuda(ctx, p, stream);
  if (p.w_dtype != p.x_dtype) return cudaErrorInvalidValue;
  if (p.algo == GemmAlgo::kMma && gemm_mma_applies(p)) return gemm_mma_cuda(ctx, p, stream);
  if (!ctx.cublas) return cudaErrorInvalidValue;
  auto h = static_cast<cublasHandle_t>(ctx.cublas);
  cublasStatus_t s = cublasSetStream(h, stream);
  if (s != CUBLAS_STATUS_SUCCESS) return from_cublas(s);
  const float alpha = 1.0f, beta = p.beta;
  const int ldx = p.ldx ? p.ldx : p.k, ldy = p.ldy ? p.ldy : p.n;
  // fp32 stays true fp32 (no TF32) so the float32 mode matches the CPU to ~1e-6.
  s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, p.n, p.m, p.k, &alpha, p.w, cublas_type(p.w_dtype),
                   p.k, p.x, cublas_type(p.x_dtype), ldx, &beta, p.y, cublas_type(p.y_dtype), ldy,
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return from_cublas(s);
}

cudaError_t gemm_batched_cuda(const CudaOpsContext& ctx, const GemmBatchedCudaParams& p,
                              cudaStream_t stream) {
  if (p.batch < 0 || p.m < 0 || p.n < 0 || p.k < 0 || !is_act(p.x_dtype) || !is_act(p.y_dtype) ||
      !ctx.cublas)
    return cudaErrorInvalidValue;
  if (p.batch == 0 || p.m == 0 || p.n == 0) return cudaSuccess;
  auto h = static_cast<cublasHandle_t>(ctx.cublas);
  cublasStatus_t s = cublasSetStream(h, stream);
  if (s != CUBLAS_STATUS_SUCCESS) return from_cublas(s);
  const float alpha = 1.0f, beta = p.beta;
  const int ldx = p.ldx ? p.ldx : p.k, ldy = p.ldy ? p.ldy : p.n;
  const int ldw = p.ldw ? p.ldw : (p.trans_w ? p.k : p.n);
  const cudaDataType_t t = cublas_type(p.x_dtype);
  s = cublasGemmStridedBatchedEx(h, p.trans_w ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, p.n, p.m,
                                 p.k, &alpha, p.w, t, ldw, p.stride_w, p.x, t, ldx, p.stride_x,
                                 &beta, p.y, cublas_type(p.y_dtype), ldy, p.stride_y, p.batch,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  return from_cublas(s);
}

}  // namespace helix
