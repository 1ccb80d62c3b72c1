// One (L, R) instantiation of the bf16 / FP8-KV MLA decode kernels (its own file: nvcc compiles
// the instantiations in parallel).
#include "ops/cuda/mla_decode_bf16_kernel.cuh"

namespace helix::cuda::mla_bf16 {
HELIX_INSTANTIATE_MLA_BF16(64, 16)
}  // namespace helix::cuda::mla_bf16
