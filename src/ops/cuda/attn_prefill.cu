// attn_prefill_cuda (ops_cuda.h): naive causal attention, one warp per (query, head) with an
// online softmax over the keys 0..t; lanes split the head dimensions.
#include <cmath>

#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

constexpr int kMaxPerLane = 8;  // qk_dim, v_dim <= 256

__global__ void attn_prefill_kernel(AttnPrefillCudaParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t job = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (job >= static_cast<int64_t>(p.num_tokens) * p.num_heads) return;
  const int t = static_cast<int>(job / p.num_heads), h = static_cast<int>(job % p.num_heads);
  const int H = p.num_heads, D = p.qk_dim, V = p.v_dim;
  float q[kMaxPerLane], o[kMaxPerLane];
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int i = lane + 32 * j;
    q[j] = i < D ? opsk::load_f(p.q, (static_cast<int64_t>(t) * H + h) * D + i, p.dtype) : 0.0f;
    o[j] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int s = 0; s <= t; ++s) {
    const int64_t kb = (static_cast<int64_t>(s) * H + h) * D;
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int i = lane + 32 * j;
      if (i < D) dot += q[j] * opsk::load_f(p.k, kb + i, p.dtype);
    }
    const float sc = opsk::warp_sum(dot) * p.scale;
    const float mn = fmaxf(m, sc);
    const float corr = expf(m - mn), e = expf(sc - mn);
    l = l * corr + e;
    const int64_t vb = (static_cast<int64_t>(s) * H + h) * V;
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int i = lane + 32 * j;
      if (i < V) o[j] = o[j] * corr + e * opsk::load_f(p.v, vb + i, p.dtype);
    }
    m = mn;
  }
  const float inv = 1.0f / l;
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int i = lane + 32 * j;
    if (i < V) opsk::store_f(p.out, (static_cast<int64_t>(t) * H + h) * V + i, o[j] * inv, p.dtype);
  }
}

}  // namespace

cudaError_t attn_prefill_cuda(const AttnPrefillCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.num_heads < 0 || p.qk_dim <= 0 || p.v_dim <= 0 ||
      p.qk_dim > 32 * kMaxPerLane || p.v_dim > 32 * kMaxPerLane || !opsk::valid_act(p.dtype))
    return cudaErrorInvalidValue;
  const int64_t jobs = static_cast<int64_t>(p.num_tokens) * p.num_heads;
  if (jobs == 0) return cudaSuccess;
  attn_prefill_kernel<<<opsk::ceil_div(jobs, 8), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace helix
