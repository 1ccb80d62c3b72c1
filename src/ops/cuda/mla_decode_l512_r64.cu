// DeepSeek-V3 sizes: kv_lora_rank 512, qk_rope_head_dim 64.
#include "ops/cuda/mla_decode_kernel.cuh"

namespace helix::cuda {
HELIX_INSTANTIATE_MLA_DECODE(512, 64, 16)
}  // namespace helix::cuda
