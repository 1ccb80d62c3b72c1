#pragma once
// The GEMM side of CudaOps (cuda_backend.cpp): dense and batched GEMMs, and the MoE experts'
// grouped-GEMM pipeline, over the launchers of ops_cuda.h. Also the two helpers both files use.
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "ops/backend.h"
#include "ops/cuda/op_timer.h"
#include "ops/cuda/ops_cuda.h"

namespace helix::cudaops {

// Throws helix::Error on a CUDA error, naming the call.
void ck(cudaError_t e, const char* what);
// The kernels' dtype of F32, BF16 or F8E4M3 (others throw).
CudaDType cdt(DType t);

// Ops::gemm on one stream: the single-GEMM launcher (its algo: HELIX_GEMM) for one
// x . w^T with packed w rows, else the batched one.
void gemm(CudaOpsContext& ctx, GemmAlgo algo, const GemmArgs& a, cudaStream_t stream);
// Ops::moe_experts: permute by expert, grouped gate_up GEMM, silu_mul, grouped down GEMM,
// weighted unpermute into a.out. Per-step buffers come from ops.alloc (stream-ordered).
void moe_experts(Ops& ops, GemmAlgo algo, OpTimer& timer, const MoeExpertsArgs& a,
                 cudaStream_t stream);

}  // namespace helix::cudaops
