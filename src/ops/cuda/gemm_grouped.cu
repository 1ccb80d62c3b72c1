// Grouped expert GEMM (grouped_gemm_cuda, ops_cuda.h): a one-block pass turns the device
// offsets into a list of (group, first row) tiles, then the tensor-core GEMM (bf16 activations,
// mma_gemm.cuh) or the row-tile GEMM runs over the host bound of that list; tiles past the real
// count exit at once. Both launches are graph-safe.
#include "ops/cuda/mma_gemm.cuh"
#include "ops/cuda/rowtile_gemm.cuh"

namespace helix {
namespace {

int max_tiles(int num_groups, int max_rows, int tile_rows) {
  // Each non-empty group adds at most one partial tile; at most max_rows groups are non-empty.
  const int groups = num_groups < max_rows ? num_groups : max_rows;
  return static_cast<int>(opsk::ceil_div(max_rows, tile_rows)) + groups;
}

// The average rows of a non-empty group (at most max_rows groups are non-empty).
int avg_group_rows(int num_groups, int max_rows) {
  const int groups = num_groups < max_rows ? num_groups : max_rows;
  return static_cast<int>(opsk::ceil_div(max_rows, groups > 0 ? groups : 1));
}
// Rows per row-tile GEMM tile.
int grouped_tile_rows(int num_groups, int max_rows) {
  return opsk::tile_rows_for(avg_group_rows(num_groups, max_rows));
}

constexpr int kPlanThreads = 1024;

// Exclusive scan of v over the block; *total gets the sum. `sh` is 32 ints of shared scratch.
__device__ int block_exclusive_scan(int v, int* sh, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += t;
  }
  if (lane == 31) sh[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    int s = lane < nw ? sh[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, s, o);
      if (lane >= o) s += t;
    }
    if (lane < nw) sh[lane] = s;  // inclusive warp prefix
  }
  __syncthreads();
  const int before = warp ? sh[warp - 1] : 0;
  *total = sh[nw - 1];
  __syncthreads();
  return before + inc - v;
}

__global__ void __launch_bounds__(kPlanThreads)
    grouped_plan_kernel(const int32_t* offsets, int num_groups, int tile_rows, int cap,
                        int32_t* tiles) {
  __shared__ int sh[32];
  int carry = 0;
  for (int base = 0; base < num_groups; base += blockDim.x) {
    const int g = base + threadIdx.x;
    int rows = 0;
    if (g < num_groups) rows = max(0, offsets[g + 1] - offsets[g]);
    const int nt = (rows + tile_rows - 1) / tile_rows;
    int total = 0;
    const int pos = carry + block_exclusive_scan(nt, sh, &total);
    for (int i = 0; i < nt && pos + i < cap; ++i) {
      tiles[1 + 2 * (pos + i)] = g;
      tiles[2 + 2 * (pos + i)] = offsets[g] + i * tile_rows;
    }
    carry += total;
  }
  if (threadIdx.x == 0) tiles[0] = min(carry, cap);
}

// Plans the tiles of tile_rows rows (at most cap) into `tiles`, then fills the grouped-GEMM
// arguments both kernels share (MmaArgs / RowTileArgs).
template <class GemmArgs>
cudaError_t plan_grouped(const GroupedGemmCudaParams& p, int tile_rows, int cap, int32_t* tiles,
                         GemmArgs& a, cudaStream_t stream) {
  grouped_plan_kernel<<<1, kPlanThreads, 0, stream>>>(p.offsets, p.num_groups, tile_rows, cap,
                                                      tiles);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  a.m = p.max_rows;
  a.n = p.n;
  a.k = p.k;
  a.ldx = p.k;
  a.ldy = p.n;
  a.y = p.y;
  a.y_dtype = p.y_dtype;
  a.w_ptrs = p.w_ptrs;
  a.scale_ptrs = p.w_dtype == CudaDType::kF8E4M3 ? p.scale_ptrs : nullptr;
  a.offsets = p.offsets;
  a.tiles = tiles;
  return cudaSuccess;
}

}  // namespace

size_t grouped_gemm_cuda_workspace_bytes(int num_groups, int max_rows) {
  return sizeof(int32_t) *
         (1 + 2 * static_cast<size_t>(
                      max_tiles(num_groups, max_rows, grouped_tile_rows(num_groups, max_rows))));
}

cudaError_t grouped_gemm_cuda(const GroupedGemmCudaParams& p, cudaStream_t stream) {
  if (p.num_groups < 0 || p.max_rows < 0 || p.n < 0 || p.k < 0 || !opsk::valid_act(p.x_dtype) ||
      !opsk::valid_act(p.y_dtype) || !p.offsets || !p.w_ptrs)
    return cudaErrorInvalidValue;
  if (p.w_dtype == CudaDType::kF8E4M3 && !p.scale_ptrs) return cudaErrorInvalidValue;
  if (p.num_groups == 0 || p.max_rows == 0 || p.n == 0) return cudaSuccess;
  if (!p.workspace ||
      p.workspace_bytes < grouped_gemm_cuda_workspace_bytes(p.num_groups, p.max_rows))
    return cudaErrorInvalidValue;
  auto* tiles = static_cast<int32_t*>(p.workspace);
  // bf16 weights with under one row per two groups (decode at batch <= 16 over 256 experts):
  // the row-tile kernel's many small blocks stream faster (92-99% of the copy bandwidth against
  // 75-89%, bench_gemm_cuda).
  // FP8 with at most 8 rows in all (batch-1 decode, top-8): the row-tile kernel too (0.080 vs
  // 0.085 ms for 8 experts' gate_up, 0.050 vs 0.057 ms down).
  const bool sparse = (p.w_dtype == CudaDType::kBF16 && 2 * p.max_rows <= p.num_groups) ||
                      (p.w_dtype == CudaDType::kF8E4M3 && p.max_rows <= 8);
  if (p.algo != GemmAlgo::kLegacy && (p.algo == GemmAlgo::kMma || !sparse) &&
      opsk::mma_gemm_supported(p.x_dtype, p.w_dtype, p.k, p.k, p.x)) {
    // Tensor cores: token tiles of 8, 16 or 32 rows by the average rows of a non-empty group (at
    // most as many tiles as the row-tile plan, so the workspace bound holds).
    const int nt = opsk::mma_tiles_for(avg_group_rows(p.num_groups, p.max_rows));
    const int cap = max_tiles(p.num_groups, p.max_rows, 8 * nt);
    opsk::MmaArgs a;
    a.x = static_cast<const __nv_bfloat16*>(p.x);
    const cudaError_t e = plan_grouped(p, 8 * nt, cap, tiles, a, stream);
    if (e != cudaSuccess) return e;
    a.kb_per_split = static_cast<int>(opsk::ceil_div(p.k, opsk::kMmaKBlock));
    const dim3 grid(static_cast<unsigned>(cap),
                    opsk::ceil_div(p.n, opsk::kMmaWarps * opsk::mma_rows_per_warp(p.w_dtype, nt)),
                    1);
    return opsk::launch_mma_gemm(a, p.w_dtype, nt, grid, stream);
  }
  const int rows = grouped_tile_rows(p.num_groups, p.max_rows);
  const int cap = max_tiles(p.num_groups, p.max_rows, rows);
  opsk::RowTileArgs a;
  a.x_dtype = p.x_dtype;
  a.x = p.x;
  const cudaError_t e = plan_grouped(p, rows, cap, tiles, a, stream);
  if (e != cudaSuccess) return e;
  // Per-group pointers are only known on the device: the vector path needs every weight
  // 16-byte aligned (cudaMalloc and safetensors-offset-aligned buffers are; the caller promises).
  return opsk::launch_rowtile_gemm(a, p.w_dtype, true, rows, cap, stream);
}

}  // namespace helix
