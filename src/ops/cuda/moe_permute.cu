// moe_permute_cuda / moe_unpermute_cuda (ops_cuda.h). The plan runs in one block: a histogram of
// expert ids, a scan into offsets, then warp 0 places the pairs 32 at a time in pair order
// (stable, hence deterministic); a second kernel gathers the rows.
#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

__global__ void __launch_bounds__(1024) permute_plan_kernel(MoePermuteCudaParams p) {
  extern __shared__ int cursor[];  // [num_experts]
  const int E = p.num_experts, P = p.num_tokens * p.top_k;
  for (int e = threadIdx.x; e < E; e += blockDim.x) cursor[e] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    const int e = p.expert_ids[i];
    if (e >= 0 && e < E) atomicAdd(&cursor[e], 1);
  }
  __syncthreads();
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  int carry = 0;
  for (int base = 0; base < E; base += 32) {
    const int e = base + lane;
    const int c = e < E ? cursor[e] : 0;
    int inc = c;
    for (int o = 1; o < 32; o <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, inc, o);
      if (lane >= o) inc += t;
    }
    if (e < E) {
      p.offsets[e] = carry + inc - c;
      cursor[e] = carry + inc - c;
    }
    carry += __shfl_sync(0xffffffffu, inc, 31);
  }
  if (lane == 0) p.offsets[E] = carry;
  __syncwarp();
  const unsigned lt = (1u << lane) - 1u;
  for (int base = 0; base < P; base += 32) {
    const int i = base + lane;
    int e = i < P ? p.expert_ids[i] : -1;
    if (e >= E) e = -1;
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int row = e >= 0 ? cursor[e] + __popc(peers & lt) : -1;
    __syncwarp();
    if (e >= 0 && (__ffs(peers) - 1) == lane) cursor[e] += __popc(peers);
    __syncwarp();
    if (i < P) {
      p.row_of_pair[i] = row;
      if (row >= 0) p.pair_of_row[row] = i;
    }
  }
}

__global__ void permute_gather_kernel(MoePermuteCudaParams p) {
  const int row = blockIdx.x;
  if (row >= p.offsets[p.num_experts]) return;
  const int64_t src = static_cast<int64_t>(p.pair_of_row[row] / p.top_k) * p.dim;
  const int64_t dst = static_cast<int64_t>(row) * p.dim;
  for (int i = threadIdx.x; i < p.dim; i += blockDim.x)
    opsk::store_f(p.x_perm, dst + i, opsk::load_f(p.x, src + i, p.dtype), p.dtype);
}

__global__ void unpermute_kernel(MoeUnpermuteCudaParams p) {
  const int t = blockIdx.x;
  const int32_t* rows = p.row_of_pair + static_cast<int64_t>(t) * p.top_k;
  const float* w = p.weights + static_cast<int64_t>(t) * p.top_k;
  const int64_t o = static_cast<int64_t>(t) * p.dim;
  for (int i = threadIdx.x; i < p.dim; i += blockDim.x) {
    float acc = p.accumulate ? opsk::load_f(p.out, o + i, p.dtype) : 0.0f;
    for (int j = 0; j < p.top_k; ++j) {
      const int r = rows[j];
      if (r >= 0)
        acc += w[j] * opsk::load_f(p.y_perm, static_cast<int64_t>(r) * p.dim + i, p.dtype);
    }
    opsk::store_f(p.out, o + i, acc, p.dtype);
  }
}

}  // namespace

cudaError_t moe_permute_cuda(const MoePermuteCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.top_k <= 0 || p.num_experts <= 0 || p.num_experts > 8192 || p.dim < 0 ||
      !opsk::valid_act(p.dtype))
    return cudaErrorInvalidValue;
  permute_plan_kernel<<<1, 1024, sizeof(int) * p.num_experts, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || p.num_tokens == 0 || p.dim == 0) return e;
  permute_gather_kernel<<<p.num_tokens * p.top_k, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t moe_unpermute_cuda(const MoeUnpermuteCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.top_k <= 0 || p.dim < 0 || !opsk::valid_act(p.dtype))
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0 || p.dim == 0) return cudaSuccess;
  unpermute_kernel<<<p.num_tokens, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace helix
