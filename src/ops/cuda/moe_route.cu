// moe_route_cuda (ops_cuda.h): one warp per token, scores in shared memory; every selection is
// a warp argmax with ties to the lower index, which is the order moe_route.cpp sorts by.
#include <cmath>

#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

constexpr int kTokensPerBlock = 4;
constexpr int kMaxExperts = 1024;

// Best (value, index) over the warp: larger value, then lower index; `skip` entries excluded.
__device__ __forceinline__ void warp_best(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i))) {
      v = ov;
      i = oi;
    }
  }
}

__global__ void __launch_bounds__(kTokensPerBlock * 32) moe_route_kernel(MoeRouteCudaParams p) {
  __shared__ float score_s[kTokensPerBlock][kMaxExperts];
  __shared__ float choice_s[kTokensPerBlock][kMaxExperts];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const int t = blockIdx.x * kTokensPerBlock + wid;
  if (t >= p.num_tokens) return;
  const int E = p.num_experts, G = p.n_group, per_group = E / G;
  float* score = score_s[wid];
  float* choice = choice_s[wid];
  const float ninf = -INFINITY;
  for (int e = lane; e < E; e += 32) {
    const float s =
        1.0f /
        (1.0f + expf(-opsk::load_f(p.logits, static_cast<int64_t>(t) * E + e, p.logits_dtype)));
    score[e] = s;
    choice[e] = s + (p.bias ? p.bias[e] : 0.0f);
  }
  __syncwarp();
  // Lane g: its group's score, the sum of the two best biased scores.
  float gs = ninf;
  if (lane < G) {
    float best = ninf, second = ninf;
    for (int e = lane * per_group; e < (lane + 1) * per_group; ++e) {
      const float c = choice[e];
      if (c > best) {
        second = best;
        best = c;
      } else if (c > second) {
        second = c;
      }
    }
    gs = best + second;
  }
  bool keep = false;
  for (int r = 0; r < p.topk_group; ++r) {
    float v = gs;
    int i = (lane < G && !keep) ? lane : -1;
    warp_best(v, i);
    if (lane == i) keep = true;
  }
  const unsigned kept = __ballot_sync(0xffffffffu, keep);
  for (int e = lane; e < E; e += 32)
    if (!((kept >> (e / per_group)) & 1u)) choice[e] = ninf;
  __syncwarp();
  // top_k rounds; chosen experts are remembered in a per-lane bit mask of its e = lane + 32j.
  unsigned taken = 0;
  int my_id = -1;
  for (int r = 0; r < p.top_k; ++r) {
    float v = ninf;
    int i = -1;
    for (int j = 0, e = lane; e < E; ++j, e += 32) {
      if ((taken >> j) & 1u) continue;
      const float c = choice[e];
      if (i < 0 || c > v) {  // e rises with j: the first of equals wins
        v = c;
        i = e;
      }
    }
    warp_best(v, i);
    if (i >= 0 && (i & 31) == lane) taken |= 1u << (i >> 5);
    if (lane == r) my_id = i;
  }
  // Lane 0 forms the weights in the CPU's order (sum then scale).
  int32_t* ids = p.expert_ids + static_cast<int64_t>(t) * p.top_k;
  float* w = p.weights + static_cast<int64_t>(t) * p.top_k;
  if (lane < p.top_k) ids[lane] = my_id;
  __syncwarp();
  if (lane == 0) {
    float sum = 0.0f;
    for (int r = 0; r < p.top_k; ++r) sum += score[ids[r]];
    for (int r = 0; r < p.top_k; ++r) {
      float x = score[ids[r]];
      if (p.norm_topk_prob) x /= (sum + 1e-20f);
      w[r] = x * p.routed_scaling_factor;
    }
  }
}

}  // namespace

cudaError_t moe_route_cuda(const MoeRouteCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.num_experts <= 0 || p.num_experts > kMaxExperts || p.n_group <= 0 ||
      p.n_group > 32 || p.num_experts % p.n_group || p.top_k <= 0 || p.top_k > 32 ||
      p.top_k > p.num_experts || p.topk_group <= 0 || p.topk_group > p.n_group ||
      !opsk::valid_act(p.logits_dtype))
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0) return cudaSuccess;
  moe_route_kernel<<<opsk::ceil_div(p.num_tokens, kTokensPerBlock), kTokensPerBlock * 32, 0,
                     stream>>>(p);
  return cudaGetLastError();
}

}  // namespace helix
