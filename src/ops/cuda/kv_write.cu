// kv_write_cuda (ops_cuda.h): each token's [c, k_pe] row into its slot of a float32 pool (bf16
// and FP8 pools: mla_kv_write.cu).
#include "ops/cuda/ops_common.cuh"

namespace helix {
namespace {

__global__ void kv_write_kernel(KvWriteCudaParams p, int ld_c, int ld_k) {
  const int t = blockIdx.x;
  const int64_t slot = p.slots[t];
  if (slot < 0) return;
  const int L = p.kv_lora_rank, W = p.kv_lora_rank + p.rope_dim;
  for (int i = threadIdx.x; i < W; i += blockDim.x) {
    const float v = i < L
                        ? opsk::load_f(p.c, static_cast<int64_t>(t) * ld_c + i, p.src_dtype)
                        : opsk::load_f(p.k_pe, static_cast<int64_t>(t) * ld_k + i - L, p.src_dtype);
    p.pool[slot * W + i] = v;
  }
}

}  // namespace

cudaError_t kv_write_cuda(const KvWriteCudaParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0 || p.kv_lora_rank < 0 || p.rope_dim < 0 || !opsk::valid_act(p.src_dtype))
    return cudaErrorInvalidValue;
  if (p.num_tokens == 0 || p.kv_lora_rank + p.rope_dim == 0) return cudaSuccess;
  kv_write_kernel<<<p.num_tokens, 256, 0, stream>>>(p, p.ld_c ? p.ld_c : p.kv_lora_rank,
                                                    p.ld_k_pe ? p.ld_k_pe : p.rope_dim);
  return cudaGetLastError();
}

}  // namespace helix
