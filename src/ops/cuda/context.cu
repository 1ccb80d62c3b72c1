// cuBLAS handle + workspace of the op library, made once (ops_cuda.h).
#include <cublas_v2.h>

#include "ops/cuda/ops_cuda.h"

namespace helix {

cudaError_t cuda_ops_context_create(CudaOpsContext* ctx, size_t workspace_bytes,
                                    size_t fp8_scratch_bytes, size_t splitk_bytes) {
  if (!ctx) return cudaErrorInvalidValue;
  *ctx = CudaOpsContext{};
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return cudaErrorInitializationError;
  // A fixed workspace keeps cuBLAS from allocating inside a graph capture.
  void* ws = nullptr;
  if (workspace_bytes) {
    const cudaError_t e = cudaMalloc(&ws, workspace_bytes);
    if (e != cudaSuccess) {
      cublasDestroy(h);
      return e;
    }
  }
  if (cublasSetWorkspace(h, ws, workspace_bytes) != CUBLAS_STATUS_SUCCESS) {
    cudaFree(ws);
    cublasDestroy(h);
    return cudaErrorInitializationError;
  }
  void* scratch = nullptr;
  if (fp8_scratch_bytes) {
    const cudaError_t e = cudaMalloc(&scratch, fp8_scratch_bytes);
    if (e != cudaSuccess) {
      cudaFree(ws);
      cublasDestroy(h);
      return e;
    }
  }
  void* splitk = nullptr;
  if (splitk_bytes) {
    const cudaError_t e = cudaMalloc(&splitk, splitk_bytes);
    if (e != cudaSuccess) {
      cudaFree(scratch);
      cudaFree(ws);
      cublasDestroy(h);
      return e;
    }
  }
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) == cudaSuccess &&
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && sms > 0)
    ctx->num_sms = sms;
  ctx->splitk = static_cast<float*>(splitk);
  ctx->splitk_bytes = splitk_bytes;
  ctx->fp8_scratch = scratch;
  ctx->fp8_scratch_bytes = fp8_scratch_bytes;
  ctx->cublas = h;
  ctx->workspace = ws;
  ctx->workspace_bytes = workspace_bytes;
  return cudaSuccess;
}

void cuda_ops_context_destroy(CudaOpsContext* ctx) {
  if (!ctx) return;
  if (ctx->cublas) cublasDestroy(static_cast<cublasHandle_t>(ctx->cublas));
  if (ctx->workspace) cudaFree(ctx->workspace);
  if (ctx->fp8_scratch) cudaFree(ctx->fp8_scratch);
  if (ctx->splitk) cudaFree(ctx->splitk);
  *ctx = CudaOpsContext{};
}

}  // namespace helix
