// The GEMM side of CudaOps (cuda_gemm_dispatch.h): GemmArgs and MoeExpertsArgs to the launchers'
// parameter structs.
#include "ops/cuda/cuda_gemm_dispatch.h"

#include <string>

#include "core/error.h"

namespace helix::cudaops {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA error in {}: {}", what, cudaGetErrorString(e));
}

CudaDType cdt(DType t) {
  switch (t) {
    case DType::F32:
      return CudaDType::kF32;
    case DType::BF16:
      return CudaDType::kBF16;
    case DType::F8E4M3:
      return CudaDType::kF8E4M3;
    default:
      fail("CudaOps: no CUDA kernel dtype for {}", dtype_name(t));
  }
}

void gemm(CudaOpsContext& ctx, GemmAlgo algo, const GemmArgs& a, cudaStream_t stream) {
  if (a.m == 0 || a.n == 0) return;
  const int64_t ldx = a.ldx ? a.ldx : a.k, ldy = a.ldy ? a.ldy : a.n;
  const int64_t ldw = a.ldw ? a.ldw : (a.trans_w ? a.k : a.n);
  if (a.batch == 1 && a.trans_w && ldw == a.k) {
    GemmCudaParams p;
    p.m = a.m;
    p.n = a.n;
    p.k = a.k;
    p.x_dtype = cdt(a.x.dtype);
    p.w_dtype = cdt(a.w.dtype);
    p.y_dtype = cdt(a.y.dtype);
    p.x = a.x.data;
    p.ldx = static_cast<int>(ldx);
    p.w = a.w.data;
    p.w_scale = a.w_scale;
    p.y = a.y.data;
    p.ldy = static_cast<int>(ldy);
    p.beta = a.beta;
    p.algo = algo;
    ck(gemm_cuda(ctx, p, stream), "gemm");
    return;
  }
  GemmBatchedCudaParams p;
  p.batch = a.batch;
  p.m = a.m;
  p.n = a.n;
  p.k = a.k;
  HELIX_CHECK(a.x.dtype == a.w.dtype, "batched gemm: x and w share a dtype");
  p.x_dtype = cdt(a.x.dtype);
  p.y_dtype = cdt(a.y.dtype);
  p.x = a.x.data;
  p.ldx = static_cast<int>(ldx);
  p.stride_x = a.stride_x;
  p.w = a.w.data;
  p.ldw = static_cast<int>(ldw);
  p.stride_w = a.stride_w;
  p.trans_w = a.trans_w;
  p.y = a.y.data;
  p.ldy = static_cast<int>(ldy);
  p.stride_y = a.stride_y;
  p.beta = a.beta;
  ck(gemm_batched_cuda(ctx, p, stream), "gemm_batched");
}

void moe_experts(Ops& ops, GemmAlgo algo, OpTimer& timer, const MoeExpertsArgs& a,
                 cudaStream_t stream) {
  const int T = a.num_tokens, K = a.top_k, E = a.num_experts, D = a.dim, I = a.inter;
  const int rows = T * K;
  if (rows == 0) return;
  const DType ad = a.x.dtype;
  DTensor xp = ops.alloc({rows, D}, ad), off = ops.alloc({E + 1}, DType::I32),
          rop = ops.alloc({rows}, DType::I32), por = ops.alloc({rows}, DType::I32);
  MoePermuteCudaParams pp;
  pp.num_tokens = T;
  pp.top_k = K;
  pp.num_experts = E;
  pp.dim = D;
  pp.dtype = cdt(ad);
  pp.expert_ids = a.expert_ids.i32();
  pp.x = a.x.data;
  pp.x_perm = xp.view().data;
  pp.offsets = off.view().i32();
  pp.row_of_pair = rop.view().i32();
  pp.pair_of_row = por.view().i32();
  {
    OpScope ts(timer, stream, "moe.permute");
    ck(moe_permute_cuda(pp, stream), "moe_permute");
  }
  const size_t wsb = grouped_gemm_cuda_workspace_bytes(E, rows);
  DTensor ws = ops.alloc({static_cast<int64_t>(wsb)}, DType::F8E4M3);  // bytes
  DTensor gu = ops.alloc({rows, 2 * I}, ad), act = ops.alloc({rows, I}, ad),
          yp = ops.alloc({rows, D}, ad);
  GroupedGemmCudaParams g;
  g.num_groups = E;
  g.max_rows = rows;
  g.x_dtype = g.y_dtype = cdt(ad);
  g.w_dtype = cdt(a.w_dtype);
  g.offsets = off.view().i32();
  g.workspace = ws.view().data;
  g.workspace_bytes = wsb;
  g.algo = algo;
  // y[rows, n] = x[rows, k] . W_e^T per expert e, as one grouped GEMM.
  auto grouped = [&](const char* name, int n, int k, const void* x, const TensorView& w_ptrs,
                     const TensorView& scale_ptrs, void* y) {
    g.n = n;
    g.k = k;
    g.x = x;
    g.w_ptrs = static_cast<const void* const*>(w_ptrs.data);
    g.scale_ptrs = static_cast<const float* const*>(scale_ptrs.data);
    g.y = y;
    OpScope ts(timer, stream,
               "moe.grouped " + std::string(name) + " " + std::string(dtype_name(a.w_dtype)));
    ck(grouped_gemm_cuda(g, stream), ("grouped_gemm " + std::string(name)).c_str());
  };
  grouped("gate_up", 2 * I, D, xp.view().data, a.gate_up_ptrs, a.gate_up_scale_ptrs,
          gu.view().data);
  ops.silu_mul(gu.view(), act.view(), rows, I);
  grouped("down", D, I, act.view().data, a.down_ptrs, a.down_scale_ptrs, yp.view().data);
  MoeUnpermuteCudaParams up;
  up.num_tokens = T;
  up.top_k = K;
  up.dim = D;
  up.dtype = cdt(ad);
  up.y_perm = yp.view().data;
  up.row_of_pair = rop.view().i32();
  up.weights = a.weights.f32();
  up.out = a.out.data;
  up.accumulate = true;
  {
    OpScope ts(timer, stream, "moe.unpermute");
    ck(moe_unpermute_cuda(up, stream), "moe_unpermute");
  }
}

}  // namespace helix::cudaops
