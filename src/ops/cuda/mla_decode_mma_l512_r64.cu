// DeepSeek-V3 sizes on tensor cores (3xTF32): kv_lora_rank 512, qk_rope_head_dim 64.
#include "ops/cuda/mla_decode_mma_kernel.cuh"

namespace helix::cuda {
HELIX_INSTANTIATE_MLA_DECODE_MMA(512, 64)
}  // namespace helix::cuda
