// The last q_len - 1 tokens of each sequence for the query tokens that see them
// (mla_decode_tail.h). Tiny next to the split kernels: at most 7 tokens a row, read from L2 by
// every head.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "ops/cuda/mla_decode_tail.h"

namespace helix::cuda::mla_tail {
namespace {

constexpr int kWarps = 4;

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Element i of a pool row: latent (bf16, or e4m3 x the row's scale) for i < L, else rope (bf16).
__device__ __forceinline__ float kv_elem(const uint8_t* row, int i, int L, bool fp8, float scale) {
  if (!fp8) return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row)[i]);
  if (i < L) {
    __nv_fp8_e4m3 v;
    v.__x = row[i];
    return static_cast<float>(v) * scale;
  }
  return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row + L)[i - L]);
}

__global__ void __launch_bounds__(kWarps * 32)
    tail_kernel(mla_bf16::Args a, int heads, int q_len, int L, int R, bool fp8, size_t row_bytes) {
  const int lane = threadIdx.x & 31;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t rows = static_cast<int64_t>(a.batch) * (q_len - 1) * heads;
  if (w >= rows) return;
  const int h = static_cast<int>(w % heads);
  const int j = 1 + static_cast<int>((w / heads) % (q_len - 1));  // query 0 sees the prefix only
  const int b = static_cast<int>(w / (static_cast<int64_t>(heads) * (q_len - 1)));
  const int cap = a.max_blocks_per_seq * a.block_size;
  const int raw = a.seq_lens[b];
  const int len = raw < 0 ? 0 : (raw > cap ? cap : raw);
  const int prefix = len - (q_len - 1) > 0 ? len - (q_len - 1) : 0;
  const int seen = len - (q_len - 1 - j);  // tokens query j sees
  if (seen <= prefix) return;              // nothing past the prefix (warp-uniform)
  const int n = seen - prefix;             // 1 .. j

  const int W = L + R;
  const int64_t row = (static_cast<int64_t>(b) * q_len + j) * heads + h;
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q) + row * W;
  const uint8_t* kv[kMaxQLen - 1];
  float kscale[kMaxQLen - 1];
  float s[kMaxQLen - 1];  // scores in log2 units
  for (int t = 0; t < n; ++t) {
    const int pos = prefix + t;
    const int block =
        a.block_table[static_cast<int64_t>(b) * a.max_blocks_per_seq + pos / a.block_size];
    kv[t] = a.kv_pool + (static_cast<int64_t>(block) * a.block_size + pos % a.block_size) *
                            static_cast<int64_t>(row_bytes);
    kscale[t] = fp8 ? *reinterpret_cast<const float*>(kv[t] + L + 2 * R) : 1.f;
    float dot = 0.f;
    for (int i = lane; i < W; i += 32)
      dot += __bfloat162float(q[i]) * kv_elem(kv[t], i, L, fp8, kscale[t]);
    s[t] = warp_sum(dot) * a.scale_log2;
  }
  constexpr float kLog2e = 1.4426950408889634f;
  const float lse2 = a.lse[row] * kLog2e;  // -inf when the prefix is empty
  float m = lse2;
  for (int t = 0; t < n; ++t) m = fmaxf(m, s[t]);
  float sum = exp2f(lse2 - m);
  for (int t = 0; t < n; ++t) sum += exp2f(s[t] - m);
  const float lse2_new = m + log2f(sum);
  const float keep = exp2f(lse2 - lse2_new);
  float p[kMaxQLen - 1];
  for (int t = 0; t < n; ++t) p[t] = exp2f(s[t] - lse2_new);
  for (int i = lane; i < L; i += 32) {
    float o;
    if (a.out_bf16)
      o = __bfloat162float(static_cast<const __nv_bfloat16*>(a.out)[row * L + i]);
    else
      o = static_cast<const float*>(a.out)[row * L + i];
    o *= keep;
    for (int t = 0; t < n; ++t) o += p[t] * kv_elem(kv[t], i, L, fp8, kscale[t]);
    if (a.out_bf16)
      static_cast<__nv_bfloat16*>(a.out)[row * L + i] = __float2bfloat16(o);
    else
      static_cast<float*>(a.out)[row * L + i] = o;
  }
  if (lane == 0) a.lse[row] = lse2_new / kLog2e;
}

}  // namespace

cudaError_t launch(const mla_bf16::Args& a, int heads, int q_len, int kv_lora_rank, int rope_dim,
                   bool fp8, size_t row_bytes, cudaStream_t stream) {
  if (q_len <= 1) return cudaSuccess;
  if (q_len > kMaxQLen || heads <= 0) return cudaErrorInvalidValue;
  const int64_t rows = static_cast<int64_t>(a.batch) * (q_len - 1) * heads;
  if (rows == 0) return cudaSuccess;
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  tail_kernel<<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(
      a, heads, q_len, kv_lora_rank, rope_dim, fp8, row_bytes);
  return cudaGetLastError();
}

}  // namespace helix::cuda::mla_tail
