// Small sizes of the tests and toy models, on tensor cores (3xTF32).
#include "ops/cuda/mla_decode_mma_kernel.cuh"

namespace helix::cuda {
HELIX_INSTANTIATE_MLA_DECODE_MMA(32, 16)
}  // namespace helix::cuda
