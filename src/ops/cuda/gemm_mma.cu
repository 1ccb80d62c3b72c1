// Dense launcher of the tensor-core decode GEMM (mma_gemm.cuh) behind gemm_cuda: picks the token
// tile width from m and splits K over the grid when ceil(n / 16) warps per token tile would not
// fill the GPU, summing the splits' fp32 partials into y with a second small kernel.
#include <algorithm>

#include "ops/cuda/mma_gemm.cuh"

namespace helix {

namespace {
// Blocks per launch to aim for: 4 waves of 4 resident blocks (48 KB rings) per SM, so the last
// wave's idle tail stays short (one wave of 576 blocks on 528 slots ran at 63% of the copy
// bandwidth, bench_gemm_cuda m=1 36864x7168).
constexpr int kWaves = 4, kBlocksPerSm = 4, kMinKBlocksPerSplit = 4;

// y[r, f] = sum_s partial[s, r, f] (+ beta * y[r, f]).
__global__ void mma_splitk_reduce_kernel(const float* partial, int splits, int m, int n, void* y,
                                         int ldy, CudaDType y_dtype, float beta) {
  const int64_t total = static_cast<int64_t>(m) * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += partial[s * total + i];
    const int64_t o = (i / n) * ldy + i % n;
    if (beta != 0.0f) v += beta * opsk::load_f(y, o, y_dtype);
    opsk::store_f(y, o, v, y_dtype);
  }
}
}  // namespace

bool gemm_mma_applies(const GemmCudaParams& p) {
  const int ldx = p.ldx ? p.ldx : p.k;
  return opsk::mma_gemm_supported(p.x_dtype, p.w_dtype, p.k, ldx, p.x) &&
         (reinterpret_cast<uintptr_t>(p.w) & 15) == 0 &&
         (p.w_dtype != CudaDType::kF8E4M3 || p.w_scale != nullptr);
}

cudaError_t gemm_mma_cuda(const CudaOpsContext& ctx, const GemmCudaParams& p, cudaStream_t stream) {
  const int nt = opsk::mma_tiles_for(p.m);
  const int tiles_m = static_cast<int>(opsk::ceil_div(p.m, 8 * nt));
  const int block_rows = opsk::kMmaWarps * opsk::mma_rows_per_warp(p.w_dtype, nt);
  const int blocks = tiles_m * static_cast<int>(opsk::ceil_div(p.n, block_rows));
  const int kblocks = static_cast<int>(opsk::ceil_div(p.k, opsk::kMmaKBlock));
  const int target = kWaves * kBlocksPerSm * ctx.num_sms;
  int splits =
      p.splits > 0 ? p.splits : static_cast<int>(opsk::ceil_div(target, std::max(blocks, 1)));
  // At least kMinKBlocksPerSplit k-blocks per split (auto): shorter ones cost more in the
  // reduce launch than they gain (q_b 24576x1536 at m=1: 6 splits 0.0235 ms, none 0.0205 ms).
  if (p.splits <= 0) splits = std::min(splits, std::max(1, kblocks / kMinKBlocksPerSplit));
  splits = std::max(1, std::min(splits, kblocks));
  const size_t per_split = static_cast<size_t>(p.m) * p.n * sizeof(float);
  if (splits > 1 && (!ctx.splitk || per_split * splits > ctx.splitk_bytes))
    splits =
        ctx.splitk ? static_cast<int>(std::min<size_t>(splits, ctx.splitk_bytes / per_split)) : 1;
  if (splits < 2) splits = 1;
  int per = static_cast<int>(opsk::ceil_div(kblocks, splits));
  splits = static_cast<int>(opsk::ceil_div(kblocks, per));  // no empty split
  if (kblocks == 0) per = 1, splits = 1;

  opsk::MmaArgs a;
  a.m = p.m;
  a.n = p.n;
  a.k = p.k;
  a.ldx = p.ldx ? p.ldx : p.k;
  a.ldy = p.ldy ? p.ldy : p.n;
  a.x = static_cast<const __nv_bfloat16*>(p.x);
  a.y = p.y;
  a.y_dtype = p.y_dtype;
  a.beta = p.beta;
  a.w = p.w;
  a.scale = p.w_scale;
  a.kb_per_split = per;
  a.partial = splits > 1 ? ctx.splitk : nullptr;
  const dim3 grid(static_cast<unsigned>(tiles_m), opsk::ceil_div(p.n, block_rows),
                  static_cast<unsigned>(splits));
  cudaError_t e = opsk::launch_mma_gemm(a, p.w_dtype, nt, grid, stream);
  if (e != cudaSuccess || splits == 1) return e;
  const int64_t total = static_cast<int64_t>(p.m) * p.n;
  const unsigned rblocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 1024));
  mma_splitk_reduce_kernel<<<rblocks, 256, 0, stream>>>(ctx.splitk, splits, p.m, p.n, p.y, a.ldy,
                                                        p.y_dtype, p.beta);
  return cudaGetLastError();
}

}  // namespace helix
