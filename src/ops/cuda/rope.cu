// rope_cuda (ops_cuda.h): one warp per (token, vector); each lane holds its pairs in registers
// so the de-interleaving write cannot race with another lane's read.
#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

constexpr int kMaxPairsPerLane = 4;  // dim <= 256

__global__ void rope_kernel(RopeCudaParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t job = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (job >= static_cast<int64_t>(p.num_tokens) * p.num_vecs) return;
  const int t = static_cast<int>(job / p.num_vecs), v = static_cast<int>(job % p.num_vecs);
  const int64_t base = t * p.token_stride + v * p.vec_stride;
  const int half = p.dim / 2;
  const float pos = static_cast<float>(p.positions[t]);
  float outa[kMaxPairsPerLane], outb[kMaxPairsPerLane];
#pragma unroll
  for (int j = 0; j < kMaxPairsPerLane; ++j) {
    const int i = lane + 32 * j;
    if (i >= half) break;
    // The model's table: angle in fp32, cos/sin times the attention factor.
    const float ang = pos * p.inv_freq[i];
    const float c = static_cast<float>(static_cast<double>(cosf(ang)) * p.mult);
    const float s = static_cast<float>(static_cast<double>(sinf(ang)) * p.mult);
    const float a = opsk::load_f(p.x, base + (p.interleave ? 2 * i : i), p.dtype);
    const float b = opsk::load_f(p.x, base + (p.interleave ? 2 * i + 1 : i + half), p.dtype);
    outa[j] = a * c - b * s;
    outb[j] = b * c + a * s;
  }
  __syncwarp();
#pragma unroll
  for (int j = 0; j < kMaxPairsPerLane; ++j) {
    const int i = lane + 32 * j;
    if (i >= half) break;
    opsk::store_f(p.x, base + i, outa[j], p.dtype);
    opsk::store_f(p.x, base + i + half, outb[j], p.dtype);
  }
}

}  // namespace

cudaError_t rope_cuda(const RopeCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.num_vecs < 0 || p.dim <= 0 || p.dim % 2 ||
      p.dim > 64 * kMaxPairsPerLane || !opsk::valid_act(p.dtype))
    return cudaErrorInvalidValue;
  const int64_t jobs = static_cast<int64_t>(p.num_tokens) * p.num_vecs;
  if (jobs == 0) return cudaSuccess;
  rope_kernel<<<opsk::ceil_div(jobs, 8), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace helix
