// y = x · w^T with FP8 E4M3 weights and their 128x128 block scales (the FP8 branch of gemm_cuda,
// ops_cuda.h). bf16 activations go to the tensor-core kernel (gemm_mma.cu). Otherwise (fp32
// activations, GemmAlgo::kLegacy) decode-sized row counts stream the FP8 bytes through the row-tile
// kernel with the scales applied on load; larger ones widen the weight into the context's scratch
// and use cuBLAS, where tensor cores pay for the extra pass.
#include <algorithm>

#include "ops/cuda/rowtile_gemm.cuh"

namespace helix {
namespace {

// out[r, c] = fp8(w[r, c]) * scale[r / 128, c / 128] in the activation dtype.
template <typename OT>
__global__ void fp8_widen_kernel(const __nv_fp8_e4m3* w, const float* scale, int n, int k,
                                 OT* out) {
  const int kblocks = (k + kFp8BlockSize - 1) / kFp8BlockSize;
  const int64_t total = static_cast<int64_t>(n) * k;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(i / k), c = static_cast<int>(i % k);
    const float v =
        static_cast<float>(w[i]) * scale[(r / kFp8BlockSize) * kblocks + c / kFp8BlockSize];
    out[i] = opsk::from_f<OT>(v);
  }
}

}  // namespace

bool gemm_mma_applies(const GemmCudaParams& p);
cudaError_t gemm_mma_cuda(const CudaOpsContext& ctx, const GemmCudaParams& p, cudaStream_t stream);

cudaError_t gemm_fp8_cuda(const CudaOpsContext& ctx, const GemmCudaParams& p, cudaStream_t stream) {
  if (!p.w_scale) return cudaErrorInvalidValue;
  const size_t widened = static_cast<size_t>(p.n) * p.k * opsk::dtype_bytes(p.x_dtype);
  const bool can_widen = ctx.fp8_scratch && ctx.fp8_scratch_bytes >= widened;
  // bf16 activations: tensor cores straight on the FP8 bytes (prefill-sized m keeps the widen +
  // cuBLAS path when a scratch exists: its GEMM is compute-bound there).
  // One row against a wide weight (batch-1 decode): the row-tile kernel streams FP8 faster (76%
  // of the copy bandwidth against 66% at 36864x7168, bench_gemm_cuda); narrow weights (q_a, kv_a)
  // fill the GPU better with the split-K tensor-core kernel.
  const bool one_row_wide = p.m == 1 && p.n >= 4096;
  if (p.algo != GemmAlgo::kLegacy && gemm_mma_applies(p) &&
      (p.algo == GemmAlgo::kMma || (!one_row_wide && (p.m <= kMmaMaxRows || !can_widen))))
    return gemm_mma_cuda(ctx, p, stream);
  if (p.m > kFp8DirectMaxRows && can_widen) {
    const int64_t total = static_cast<int64_t>(p.n) * p.k;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 8192));
    const auto* w = static_cast<const __nv_fp8_e4m3*>(p.w);
    if (p.x_dtype == CudaDType::kBF16)
      fp8_widen_kernel<<<blocks, 256, 0, stream>>>(w, p.w_scale, p.n, p.k,
                                                   static_cast<__nv_bfloat16*>(ctx.fp8_scratch));
    else
      fp8_widen_kernel<<<blocks, 256, 0, stream>>>(w, p.w_scale, p.n, p.k,
                                                   static_cast<float*>(ctx.fp8_scratch));
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    GemmCudaParams q = p;
    q.w = ctx.fp8_scratch;
    q.w_dtype = p.x_dtype;
    q.w_scale = nullptr;
    return gemm_cuda(ctx, q, stream);
  }
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
  const int rows = opsk::tile_rows_for(p.tile_rows > 0 ? p.tile_rows : p.m);
  return opsk::launch_rowtile_gemm(a, CudaDType::kF8E4M3, aligned, rows,
                                   static_cast<int>(opsk::ceil_div(p.m, rows)), stream);
}

}  // namespace helix
